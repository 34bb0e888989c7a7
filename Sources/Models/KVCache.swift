/// Keys and values of every layer for the positions a sequence has run so far, allocated
/// once for `capacity` positions. Entries are f16, as in llama.cpp's default cache.
public final class KVCache: @unchecked Sendable {
    public let layers: Int
    public let capacity: Int
    /// Floats per position per layer (KV heads × head dimension).
    public let rowWidth: Int
    /// Positions filled so far.
    public internal(set) var length = 0
    let keys: [UnsafeMutablePointer<Float16>]
    let values: [UnsafeMutablePointer<Float16>]

    public init(layers: Int, capacity: Int, rowWidth: Int) {
        self.layers = layers
        self.capacity = capacity
        self.rowWidth = rowWidth
        keys = (0..<layers).map { _ in .allocate(capacity: capacity * rowWidth) }
        values = (0..<layers).map { _ in .allocate(capacity: capacity * rowWidth) }
    }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    /// Forgets positions from `newLength` on (for example to start a new sequence).
    public func truncate(to newLength: Int) {
        length = min(length, max(0, newLength))
    }
}

/// A heap buffer of floats with a fixed size, freed with its owner.
final class FloatBuffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { pointer.deallocate() }
}
