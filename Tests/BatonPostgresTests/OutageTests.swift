import BatonCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

@testable import BatonPostgres

/// A PostgreSQL server of the test's own, which it can take down and bring back
/// (`scripts/postgres`), without disturbing the server the other tests share.
struct OwnServer {
    static let script = URL(filePath: #filePath).deletingLastPathComponent().appending(path: "../../scripts/postgres").standardized.path

    let directory: String
    let location: PostgresLocation

    static func start() throws -> OwnServer {
        let directory = FileManager.default.temporaryDirectory.appending(path: "baton-pg-\(UInt32.random(in: 0...UInt32.max))").path
        try Self.run("start", directory)
        // Read from the file the script leaves: the server it starts inherits the script's
        // standard output, so a pipe would not reach its end while the server runs.
        let url = try String(contentsOfFile: directory + "/url", encoding: .utf8)
        return OwnServer(directory: directory, location: try PostgresLocation(url.trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    func down() throws { try Self.run("down", self.directory) }
    func up() throws { try Self.run("up", self.directory) }
    func remove() { try? Self.run("stop", self.directory) }

    /// Runs the script with `system`, which waits for the script alone: Foundation's
    /// `Process` would also wait for the server the script leaves running.
    private static func run(_ command: String, _ directory: String) throws {
        guard system("'\(Self.script)' \(command) '\(directory)' >/dev/null") == 0 else {
            throw PostgresStoreError("scripts/postgres \(command) failed")
        }
    }
}

@Suite(
    "PostgreSQL store: the database goes away and comes back",
    .enabled(if: ScratchDatabase.server != nil, "\(ScratchDatabase.missing)")
)
struct OutageTests {
    @Test("while the database is down a write says so within its timeout; once it is back, writes work and nothing committed is lost")
    func outage() async throws {
        let server = try OwnServer.start()
        defer { server.remove() }
        let store = try await PostgresStore.open(server.location, logger: ScratchDatabase.logger)
        let job = NewJob(
            queue: "q", payload: "1", priority: 0, runAt: 0, maxAttempts: 3, backoff: .standard, leaseMilliseconds: 30_000,
            uniqueKey: nil)
        let before = try await store.write(timeout: .seconds(10)) { try await $0.insert(job).id }
        try server.down()
        let started = ContinuousClock.now
        await #expect(throws: PostgresUnavailable.self) {
            try await store.write(timeout: .seconds(2)) { try await $0.insert(job).id }
        }
        #expect(ContinuousClock.now - started < .seconds(10), "refused within its timeout, not after the pool's minute")
        try server.up()
        // The pool reconnects on its own; poll until a write goes through.
        var after: Int64?
        let deadline = ContinuousClock.now + .seconds(30)
        while after == nil, ContinuousClock.now < deadline {
            after = try? await store.write(timeout: .seconds(2)) { try await $0.insert(job).id }
            if after == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(after != nil && after! > before)
        #expect(try await store.write(timeout: .seconds(5)) { try await $0.job(id: before) }?.payload == "1")
        await store.close()
    }
}
