#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The memory bandwidth a plain streaming read reaches here: the ceiling for decoding a
/// model larger than the caches, which reads every weight once per token (gpt-fast reports
/// achieved bandwidth beside tokens/s for this reason). Measured on the page size the
/// weights use, since on these VMs 2 MiB pages stream faster than 4 KiB ones (DESIGN.md).
public enum StreamingRead {
    /// GB/s reading `bytes` of memory with `threads` threads, best of `repetitions`, on
    /// 2 MiB transparent huge pages or on 4 KiB pages.
    public static func gigabytesPerSecond(bytes: Int = 1 << 30, threads: Int, hugePages: Bool, repetitions: Int = 3) -> Double {
        guard let region = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), region != MAP_FAILED else { return 0 }
        defer { munmap(region, bytes) }
        #if os(Linux)
        _ = madvise(region, bytes, hugePages ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)
        #endif
        memset(region, 1, bytes)
        let pool = ThreadPool(threads: threads)
        let vectors = bytes / 64
        let base = UncheckedBox(UnsafeRawPointer(region))
        var best = 0.0
        for _ in 0..<repetitions {
            let start = DispatchTime.now().uptimeNanoseconds
            pool.parallelFor(threads, minimumChunk: 1) { parts in
                for part in parts {
                    let lo = vectors * part / threads, hi = vectors * (part + 1) / threads
                    var a = SIMD16<Float>(), b = SIMD16<Float>()
                    var i = lo
                    while i + 1 < hi {
                        a += base.value.load(fromByteOffset: 64 * i, as: SIMD16<Float>.self)
                        b += base.value.load(fromByteOffset: 64 * (i + 1), as: SIMD16<Float>.self)
                        i += 2
                    }
                    // Keeps the sums alive without a data-dependent branch in the loop.
                    if (a + b).sum() == .infinity { print("") }
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = max(best, Double(bytes) / seconds / 1e9)
        }
        return best
    }
}
