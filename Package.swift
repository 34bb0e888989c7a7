// swift-tools-version:6.0
import PackageDescription

// Numeric targets are compiled for Haswell (AVX2 + FMA + F16C, every x86-64 server since 2013): without a named CPU,
// Swift lowers SIMD fused multiply-adds to scalar `fmaf` calls (DESIGN.md, measured facts).
#if arch(x86_64)
let numericFlags: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-march=haswell", "-target-cpu", "haswell"])]
#else
let numericFlags: [SwiftSetting] = []
#endif

let package = Package(
    name: "Apus",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "apus", targets: ["apus"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        .target(name: "GGUF"),
        .target(name: "Digest", dependencies: ["KernelsC"]),
        .target(name: "KernelsC", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "Kernels", dependencies: ["KernelsC"], swiftSettings: numericFlags),
        .target(name: "Tokenizer", dependencies: ["GGUF"]),
        .target(name: "Models", dependencies: ["GGUF", "Kernels", "Tokenizer"], swiftSettings: numericFlags),
        .target(name: "Engine", dependencies: ["Models", "Tokenizer", "Kernels", "Digest"]),
        .target(name: "ModelStore", dependencies: ["Digest"]),
        .target(
            name: "Server",
            dependencies: [
                "Engine", "Models", "Tokenizer",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "Router",
            dependencies: [
                "Server",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "apus",
            dependencies: [
                "GGUF", "Kernels", "Tokenizer", "Models", "Engine", "ModelStore", "Server", "Router", "Digest",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "TestSupport", dependencies: ["GGUF", "Kernels", "ModelStore"], path: "Tests/TestSupport"),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "TestSupport"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "TestSupport"], swiftSettings: numericFlags),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer", "GGUF", "TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "GGUF", "Kernels", "Tokenizer", "Engine", "TestSupport"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Models", "Tokenizer", "GGUF", "TestSupport"]),
        .testTarget(name: "ModelStoreTests", dependencies: ["ModelStore", "Digest"]),
        .testTarget(name: "DigestTests", dependencies: ["Digest"]),
        .testTarget(name: "ServerTests", dependencies: ["Server", "Engine", "Models", "Tokenizer", "GGUF", "TestSupport"]),
        .testTarget(name: "RouterTests", dependencies: ["Router", "Server", "Engine", "Models", "Tokenizer", "TestSupport"]),
    ]
)
