import XCTest
@testable import Kernels

final class ArgmaxTests: XCTestCase {
    /// The loop greedy decoding used before: the first index of the largest value, NaN never
    /// larger, 0 when the first value is NaN.
    func reference(_ x: [Float]) -> Int {
        var best = 0
        for i in x.indices where x[i] > x[best] { best = i }
        return best
    }

    func testMatchesTheScalarLoopOnAwkwardSizesTiesAndNaNs() {
        var seed: UInt64 = 17
        func level() -> Float {  // -4...4: few distinct values, so the largest is often tied
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(seed >> 33) % 9 - 4)
        }
        func position(_ count: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int(seed >> 33) % count
        }
        for count in [0, 1, 2, 15, 16, 17, 31, 33, 100, 151_936] {
            for trial in 0..<7 {
                var x = (0..<count).map { _ in level() }
                if count > 0 {
                    switch trial {
                    case 1: x[position(count)] = .nan
                    case 2: x[0] = .nan
                    case 3: x[count - 1] = .infinity
                    case 4: for i in x.indices where i % 3 == 0 { x[i] = .nan }
                    case 5: x = x.map { _ in -.infinity }
                    case 6: x[position(count)] = 100  // one largest value, anywhere
                    default: break
                    }
                }
                let got = x.withUnsafeBufferPointer { Argmax.index($0) }
                XCTAssertEqual(got, reference(x), "count \(count) trial \(trial)")
            }
        }
    }
}
