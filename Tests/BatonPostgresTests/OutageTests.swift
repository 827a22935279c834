import BatonCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import BatonTestSupport

@testable import BatonPostgres

extension ThrowawayPostgres {
    var location: PostgresLocation { get throws { try PostgresLocation(self.url) } }
}

@Suite(
    "PostgreSQL store: the database goes away and comes back",
    .enabled(if: ScratchDatabase.server != nil, "\(ScratchDatabase.missing)")
)
struct OutageTests {
    @Test("while the database is down a write says so within its timeout; once it is back, writes work and nothing committed is lost")
    func outage() async throws {
        let server = try ThrowawayPostgres.start()
        defer { server.remove() }
        let store = try await PostgresStore.open(try server.location, logger: ScratchDatabase.logger)
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
