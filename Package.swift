// swift-tools-version:6.1
import PackageDescription

/// Debug builds (the ones tests run) contain a fault switch that can stall the authority;
/// release builds do not.
let faultInjection: [SwiftSetting] = [.define("BATON_FAULT_INJECTION", .when(configuration: .debug))]

/// A dependency of the server side only. An app that wants just the client depends on
/// Baton with `traits: []`, and SwiftPM then neither resolves nor builds these (README).
func server(_ product: String, _ package: String) -> Target.Dependency {
    .product(name: product, package: package, condition: .when(traits: ["Server"]))
}

let package = Package(
    name: "Baton",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "batond", targets: ["batond"]),
        .executable(name: "baton", targets: ["baton"]),
        .executable(name: "baton-bench", targets: ["BatonBench"]),
        .library(name: "BatonCore", targets: ["BatonCore"]),
        .library(name: "BatonProtocol", targets: ["BatonProtocol"]),
        .library(name: "BatonStore", targets: ["BatonStore"]),
        .library(name: "BatonServer", targets: ["BatonServer"]),
        .library(name: "BatonClient", targets: ["BatonClient"]),
    ],
    traits: [
        .trait(name: "Server", description: "batond, the baton CLI and the store: everything but the client library"),
        .trait(
            name: "OTel",
            description: "batond exports spans of job attempts over OTLP (--otel-endpoint), with swift-otel: minutes more to build",
            enabledTraits: ["Server"]
        ),
        .default(enabledTraits: ["Server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // Without its default traits: neither swift-configuration nor full Foundation.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // The job state machine, backoff and lease rules: pure values, no IO.
        .target(
            name: "BatonCore",
            dependencies: [
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // Wire messages, the JSON-line codec and error codes; shared by server and clients.
        .target(name: "BatonProtocol", dependencies: ["BatonCore"]),
        // A SQLite VFS shim that writes each commit's WAL frames with one system call.
        .target(name: "CSQLiteWAL", dependencies: [server("GRDBSQLite", "GRDB.swift")]),
        // The SQLite job store: schema, migrations and the claim and expiry queries.
        .target(
            name: "BatonStore",
            dependencies: [
                "BatonCore", "BatonProtocol", "CSQLiteWAL", server("GRDB", "GRDB.swift"), server("GRDBSQLite", "GRDB.swift"),
            ]
        ),
        // The PostgreSQL job store, which sidecars on many hosts share: schema, migrations,
        // and the claim, lease and expiry statements, with PostgreSQL's clock deciding leases.
        .target(
            name: "BatonPostgres",
            dependencies: [
                "BatonCore",
                server("PostgresNIO", "postgres-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // libsystemd, for readiness, the watchdog and socket activation.
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // glibc's mallopt, for batond's allocator tuning.
        .systemLibrary(name: "CMalloc"),
        // pidfd_open, to tell when a worker's process has exited.
        .systemLibrary(name: "CProcess"),
        .target(
            name: "BatonSystemd",
            dependencies: ["CSystemd", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]
        ),
        // The authorities (SQLite's single writer; a host of a PostgreSQL fleet) and the socket server.
        .target(
            name: "BatonServer",
            dependencies: [
                "BatonCore", "BatonProtocol", "BatonStore", "BatonPostgres", "CProcess",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                server("NIOExtras", "swift-nio-extras"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                server("CoreMetrics", "swift-metrics"),
                server("Prometheus", "swift-prometheus"),
                server("TOMLKit", "TOMLKit"),
                server("Hummingbird", "hummingbird"),
                server("HTTPTypes", "swift-http-types"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
            ],
            swiftSettings: faultInjection
        ),
        // The Swift client library: one multiplexed connection, leases as values.
        .target(
            name: "BatonClient",
            dependencies: [
                "BatonCore", "BatonProtocol",
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "batond",
            dependencies: [
                "BatonServer", "BatonPostgres", "BatonSystemd", "CMalloc",
                server("ArgumentParser", "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "OTel", package: "swift-otel", condition: .when(traits: ["OTel"])),
            ],
            swiftSettings: faultInjection
        ),
        .executableTarget(
            name: "baton",
            dependencies: [
                "BatonClient", "BatonCore", "BatonProtocol",
                server("ArgumentParser", "swift-argument-parser"),
            ]
        ),
        // An example worker: a multi-stage document job that resumes from its checkpoint.
        example(name: "document-pipeline", path: "Examples/DocumentPipeline"),
        // The README's worker, compiled so that it stays true.
        example(name: "email-worker", path: "Examples/EmailWorker"),
        // A worker whose spans reach a collector when built with the OTel trait (Tests/traces).
        example(
            name: "traced-worker", path: "Examples/TracedWorker",
            extra: [.product(name: "OTel", package: "swift-otel", condition: .when(traits: ["OTel"]))]
        ),
        // A blocking line-JSON connection for tests and the benchmark, which drive batond from threads.
        .target(name: "BatonTestSupport"),
        .executableTarget(
            name: "BatonBench",
            dependencies: [
                "BatonTestSupport", "BatonPostgres", "BatonCore",
                server("ArgumentParser", "swift-argument-parser"),
            ]
        ),
        // The fuzz target for the line framing and request decoding (scripts/fuzz).
        .executableTarget(name: "baton-fuzz", dependencies: ["BatonProtocol"], path: "Sources/BatonFuzz"),
        .testTarget(name: "BatonCoreTests", dependencies: ["BatonCore"]),
        .testTarget(name: "BatonProtocolTests", dependencies: ["BatonProtocol"]),
        .testTarget(name: "BatonStoreTests", dependencies: ["BatonStore", server("GRDB", "GRDB.swift")]),
        .testTarget(name: "BatonPostgresTests", dependencies: ["BatonPostgres", "BatonTestSupport", server("PostgresNIO", "postgres-nio")]),
        .testTarget(
            name: "BatonSystemdTests",
            dependencies: [
                "BatonSystemd",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "BatondTests", dependencies: ["BatonProtocol", "BatonTestSupport", "batond"]),
        .testTarget(
            name: "BatonClientTests",
            dependencies: [
                "BatonClient", "BatonTestSupport", "batond", "baton", "document-pipeline",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
    ]
)

/// An example worker: an executable on the client library, run in a service group.
func example(name: String, path: String, extra: [Target.Dependency] = []) -> Target {
    .executableTarget(
        name: name,
        dependencies: [
            "BatonClient",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ] + extra,
        path: path
    )
}
