import BatonCore
import GRDB
import Testing

@testable import BatonStore

@Suite("Schema migrations")
struct MigrationTests {
    @Test("a store from before v7 keeps its unique keys and its finished jobs, and completing a job builds no temporary b-tree")
    func finishedAtBecomesTheMarkOfAFinishedJob() throws {
        let path = try temporaryStorePath()
        do {
            let old = try DatabaseQueue(path: path)
            try JobStore.migrator.migrate(old, upTo: "v6: audit trail")
            try old.write { db in
                let insert = """
                    INSERT INTO jobs (id, queue, state, ready, payload, priority, run_at, max_attempts,
                        backoff_initial_ms, backoff_factor, backoff_max_ms, lease_ms, unique_key, created_at, finished_at)
                    VALUES (?, 'q', ?, 0, '{}', 0, 0, 3, 1000, 2, 60000, 30000, ?, 5, ?)
                    """
                // A finished job that an older build left without finished_at, and a queued
                // one with a stray finished_at: the migration repairs both.
                try db.execute(sql: insert, arguments: [1, "completed", "k", nil])
                try db.execute(sql: insert, arguments: [2, "queued", "k", 7])
            }
        }
        let store = try JobStore(path: path)
        let (holder, finished, unfinished, temporaryTables) = try store.write { tx in
            (
                try tx.unfinishedJob(queue: "q", uniqueKey: "k"), try tx.job(id: 1)?.finishedAt, try tx.job(id: 2)?.finishedAt,
                try tx.temporaryTables(in: StoreTransaction.completeSQL)
            )
        }
        #expect(holder == 2)
        #expect(finished == 5)
        #expect(unfinished == nil)
        #expect(temporaryTables == 0)
    }
}
