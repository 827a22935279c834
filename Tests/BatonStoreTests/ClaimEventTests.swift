import BatonCore
import GRDB
import Testing

@testable import BatonStore

@Suite("Claim events kept in the job's row")
struct ClaimEventTests {
    let store: JobStore

    init() throws {
        self.store = try JobStore(path: try temporaryStorePath())
    }

    func newJob() -> NewJob {
        NewJob(
            queue: "q", payload: "{}", priority: 0, runAt: 0, maxAttempts: 3, backoff: .standard, leaseMilliseconds: 1_000, uniqueKey: nil
        )
    }

    func eventRows(_ tx: StoreTransaction, job: Int64) throws -> Int {
        try Int.fetchOne(tx.db, sql: "SELECT count(*) FROM job_events WHERE job_id = ?", arguments: [job]) ?? -1
    }

    @Test("a job completed at its first attempt writes no event row, yet its claim is in the trail")
    func completedFirstTime() throws {
        let (rows, events) = try self.store.write { tx in
            try tx.insert(self.newJob(), id: 1, now: 0)
            _ = try tx.markClaimed(id: 1, token: FencingToken(rawValue: 7), leaseMilliseconds: nil, worker: "w", peer: nil, claimEvent: 1, now: 5)
            _ = try tx.markCompleted(id: 1, token: FencingToken(rawValue: 7), result: nil, now: 6)
            return (try self.eventRows(tx, job: 1), try tx.events(of: 1))
        }
        #expect(rows == 0)
        #expect(events == [JobEvent(.claimed, at: 5, state: .running, token: FencingToken(rawValue: 7), detail: "w")])
    }

    @Test("an attempt that ends otherwise moves its claim into the trail before the next claim overwrites the row")
    func retriedAttempt() throws {
        let kinds = try self.store.write { tx in
            try tx.insert(self.newJob(), id: 1, now: 0)
            _ = try tx.markClaimed(id: 1, token: FencingToken(rawValue: 1), leaseMilliseconds: nil, worker: "a", peer: nil, claimEvent: 10, now: 1)
            try tx.recordEvent(JobEvent(.checkpointed, at: 2, state: .running, token: FencingToken(rawValue: 1)), job: 1, sequence: 11)
            // A stale token ends nothing, so it moves nothing.
            #expect(try !tx.markUnsuccessful(id: 1, token: FencingToken(rawValue: 9), decision: .retry(runAt: 0), error: "x", now: 3))
            #expect(try self.eventRows(tx, job: 1) == 1)
            #expect(try tx.markUnsuccessful(id: 1, token: FencingToken(rawValue: 1), decision: .retry(runAt: 0), error: "x", now: 3))
            try tx.recordEvent(JobEvent(.failed, at: 3, state: .retrying, token: FencingToken(rawValue: 1)), job: 1, sequence: 12)
            _ = try tx.markClaimed(id: 1, token: FencingToken(rawValue: 2), leaseMilliseconds: nil, worker: "b", peer: nil, claimEvent: 13, now: 4)
            #expect(try tx.markPaused(id: 1, from: .running))
            return try tx.events(of: 1).map { "\($0.kind.rawValue):\($0.detail ?? "")@\($0.at)" }
        }
        #expect(kinds == ["claimed:a@1", "checkpointed:@2", "failed:@3", "claimed:b@4"])
    }
}
