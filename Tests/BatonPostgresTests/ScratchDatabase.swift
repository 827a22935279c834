import Foundation
import Logging
import PostgresNIO

@testable import BatonPostgres

/// A database of its own for one test, on the server `BATON_TEST_POSTGRES` names
/// (`scripts/test` starts a throwaway one), dropped when the test ends.
enum ScratchDatabase {
    /// The server's URL, if the tests have one.
    static let server: PostgresLocation? = ProcessInfo.processInfo.environment["BATON_TEST_POSTGRES"].flatMap {
        try? PostgresLocation($0)
    }

    static let missing = "set BATON_TEST_POSTGRES to a PostgreSQL URL to run these (scripts/test starts a throwaway server)"

    static let logger = Logger(label: "baton.postgres.test")

    /// Runs `body` with a fresh, empty database's location.
    static func with<Result>(_ body: (PostgresLocation) async throws -> Result) async throws -> Result {
        guard let server = Self.server else { throw PostgresStoreError("no BATON_TEST_POSTGRES") }
        let name = "baton_test_\(UInt64.random(in: 0...UInt64.max))"
        try await Self.admin(server) { client in
            try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: Self.logger)
        }
        var location = server
        location.database = name
        do {
            let result = try await body(location)
            try await Self.drop(name, on: server)
            return result
        } catch {
            try? await Self.drop(name, on: server)
            throw error
        }
    }

    private static func drop(_ name: String, on server: PostgresLocation) async throws {
        try await Self.admin(server) { client in
            try await client.query(PostgresQuery(unsafeSQL: "DROP DATABASE \(name) WITH (FORCE)"), logger: Self.logger)
        }
    }

    /// Runs `body` with a client of the server's own database.
    private static func admin(_ server: PostgresLocation, _ body: (PostgresClient) async throws -> Void) async throws {
        let client = PostgresClient(configuration: server.configuration, backgroundLogger: Self.logger)
        let pool = await PostgresStore.run(client)
        defer { pool.cancel() }
        try await body(client)
    }
}
