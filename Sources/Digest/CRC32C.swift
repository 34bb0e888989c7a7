import KernelsC

/// CRC-32C (Castagnoli, as iSCSI, ext4 and gRPC's framing use it): the checksum of KV blocks
/// shipped between workers. A CRC catches the corruption a network or a bug makes (bit flips,
/// torn or shifted writes) at a fraction of a cryptographic hash's cost; SSE4.2 computes it
/// with one instruction per eight bytes, and the table walk here gives the same value
/// everywhere else.
public enum CRC32C {
    public enum Path: Sendable, CaseIterable { case portable, hardware }

    /// The fastest path this CPU has.
    public static let fastest: Path = apus_has_crc32c() == 1 ? .hardware : .portable

    /// The CRC of `bytes` continuing `crc` (0 to start).
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer, path: Path = fastest) -> UInt32 {
        guard bytes.count > 0 else { return crc }
        switch path {
        case .hardware:
            precondition(apus_has_crc32c() == 1, "this CPU has no crc32 instruction")
            return apus_crc32c_update(crc, bytes.baseAddress, bytes.count)
        case .portable:
            var c = ~crc
            for byte in bytes { c = table[Int(UInt8(truncatingIfNeeded: c) ^ byte)] ^ (c >> 8) }
            return ~c
        }
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        let array = Array(bytes)
        return array.withUnsafeBytes { update(0, $0) }
    }

    /// The reflected polynomial 0x1EDC6F41, one entry per byte value.
    private static let table: [UInt32] = (0..<256).map { (i: UInt32) -> UInt32 in
        var c = i
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }
}
