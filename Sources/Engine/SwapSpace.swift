#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Models

/// Where a preempted sequence's keys and values wait instead of being recomputed (vLLM's
/// swap space; FlexGen's memory tiers): up to `memoryBytes` in host memory, then up to
/// `fileBytes` in a temporary file (unlinked at once, so nothing outlives the process). A
/// sequence is swapped when copying it out and back is predicted to beat recomputing its
/// positions: the copies at the bandwidth measured on earlier swaps, against the prefill
/// rate the engine measured on its own steps. Short sequences are recomputed.
final class SwapSpace {
    let memoryBytes: Int
    let fileBytes: Int
    private enum Place {
        case memory(UnsafeMutableRawPointer)
        case file(offset: Int)
    }

    private struct Entry {
        let positions: Int
        let bytes: Int
        let place: Place
        /// What recomputing would have cost, predicted when it was swapped out.
        let recomputeSeconds: Double
    }

    private var entries: [ObjectIdentifier: Entry] = [:]
    private var memoryUsed = 0
    private var fileEnd = 0
    private var fileEntries = 0
    private var descriptor: Int32 = -1
    /// Bytes per second of swaps so far (out and in); 4 GB/s until the first one.
    private var copyBytesPerSecond = 4e9
    private(set) var swapOuts = 0
    private(set) var swapIns = 0
    private(set) var bytesMoved = 0
    private(set) var swapSeconds = 0.0
    /// Predicted recompute time of the sequences swapped back in, less the copies' time.
    private(set) var secondsSaved = 0.0
    private(set) var recomputed = 0

    init(memoryBytes: Int, fileBytes: Int) {
        self.memoryBytes = memoryBytes
        self.fileBytes = fileBytes
    }

    deinit {
        for entry in entries.values { if case .memory(let p) = entry.place { p.deallocate() } }
        if descriptor >= 0 { close(descriptor) }
    }

    func holds(_ s: Sequence) -> Bool { entries[ObjectIdentifier(s)] != nil }

    /// Copies `s`'s computed positions out of `cache`, when there is room and it is worth
    /// it at `prefillTokensPerSecond` (nil: not measured yet, so swap). Returns whether it did;
    /// the caller releases the blocks either way.
    func swapOut(_ s: Sequence, cache: PagedKVCache, prefillTokensPerSecond: Double?) -> Bool {
        // Staged keys (Q4_0) go in whole blocks: an open block's positions are recomputed.
        let positions = cache.stagesKeys ? s.computed / cache.blockSize * cache.blockSize : s.computed
        let bytes = cache.bytes(positions: positions)
        let recompute = prefillTokensPerSecond.map { Double(positions) / $0 } ?? .infinity
        guard positions > 0, 2 * Double(bytes) / copyBytesPerSecond < recompute else {
            recomputed += 1
            return false
        }
        let start = DispatchTime.now().uptimeNanoseconds
        let place: Place
        if memoryUsed + bytes <= memoryBytes {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            cache.read(table: s.blockTable, positions: positions, into: buffer)
            memoryUsed += bytes
            place = .memory(buffer)
        } else if fileEnd + bytes <= fileBytes, let offset = writeToFile(cache: cache, table: s.blockTable, positions: positions, bytes: bytes) {
            place = .file(offset: offset)
        } else {
            recomputed += 1
            return false
        }
        entries[ObjectIdentifier(s)] = Entry(positions: positions, bytes: bytes, place: place, recomputeSeconds: recompute)
        swapOuts += 1
        account(bytes, since: start)
        return true
    }

    /// Positions `s` has waiting here (0 if none).
    func positions(of s: Sequence) -> Int { entries[ObjectIdentifier(s)]?.positions ?? 0 }

    /// Writes `s`'s swapped positions into the blocks of `table` and forgets them.
    func swapIn(_ s: Sequence, cache: PagedKVCache, table: [Int32]) -> Int {
        guard let entry = entries.removeValue(forKey: ObjectIdentifier(s)) else { return 0 }
        let start = DispatchTime.now().uptimeNanoseconds
        let bytes = entry.bytes
        switch entry.place {
        case .memory(let buffer):
            cache.write(table: table, positions: entry.positions, from: buffer)
            buffer.deallocate()
            memoryUsed -= bytes
        case .file(let offset):
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            defer { buffer.deallocate() }
            readFromFile(offset: offset, into: buffer, bytes: bytes)
            cache.write(table: table, positions: entry.positions, from: buffer)
            releaseFileEntry()
        }
        swapIns += 1
        let copySeconds = account(bytes, since: start)
        if entry.recomputeSeconds.isFinite { secondsSaved += entry.recomputeSeconds - 2 * copySeconds }
        return entry.positions
    }

    /// Forgets `s`'s positions (it finished or was aborted while swapped out).
    func drop(_ s: Sequence) {
        guard let entry = entries.removeValue(forKey: ObjectIdentifier(s)) else { return }
        switch entry.place {
        case .memory(let buffer):
            buffer.deallocate()
            memoryUsed -= entry.bytes
        case .file: releaseFileEntry()
        }
    }

    @discardableResult
    private func account(_ bytes: Int, since start: UInt64) -> Double {
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        bytesMoved += bytes
        swapSeconds += seconds
        if swapSeconds > 0 { copyBytesPerSecond = Double(bytesMoved) / swapSeconds }
        return seconds
    }

    /// The file grows by appending; it is truncated once nothing in it is waiting.
    private func writeToFile(cache: PagedKVCache, table: [Int32], positions: Int, bytes: Int) -> Int? {
        if descriptor < 0 {
            let path = NSTemporaryDirectory() + "apus-swap-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            descriptor = open(path, O_RDWR | O_CREAT | O_EXCL, 0o600)
            guard descriptor >= 0 else { return nil }
            unlink(path)
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { buffer.deallocate() }
        cache.read(table: table, positions: positions, into: buffer)
        let offset = fileEnd
        var written = 0
        while written < bytes {
            let n = pwrite(descriptor, buffer + written, bytes - written, off_t(offset + written))
            guard n > 0 else { return nil }
            written += n
        }
        fileEnd += bytes
        fileEntries += 1
        return offset
    }

    private func readFromFile(offset: Int, into buffer: UnsafeMutableRawPointer, bytes: Int) {
        var read = 0
        while read < bytes {
            let n = pread(descriptor, buffer + read, bytes - read, off_t(offset + read))
            precondition(n > 0, "the swap file lost data: \(String(cString: strerror(errno)))")
            read += n
        }
    }

    private func releaseFileEntry() {
        fileEntries -= 1
        if fileEntries == 0 {
            fileEnd = 0
            _ = ftruncate(descriptor, 0)
        }
    }
}
