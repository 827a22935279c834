import BatonCore
import BatonStore
import Foundation
import Testing

/// A store file path in a new temporary directory.
func temporaryStorePath() throws -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory.appendingPathComponent("jobs.sqlite").path
}

@Suite("The SQLite job store")
struct JobStoreTests {
    let path: String

    init() throws {
        self.path = try temporaryStorePath()
    }

    func newJob(queue: String = "q", priority: Int64 = 0, runAt: Int64 = 0, uniqueKey: String? = nil) -> NewJob {
        NewJob(
            queue: queue, payload: "{}", priority: priority, runAt: runAt, maxAttempts: 3,
            backoff: .standard, leaseMilliseconds: 1_000, uniqueKey: uniqueKey
        )
    }

    @Test("jobs waiting on each named limit are counted as they come and go, odd names included; forgetting idle names keeps the rest")
    func waitingByLimit() throws {
        let store = try JobStore(path: self.path)
        let names = ["openai", #"quote"and\slash"#, "tenant:ünïcode"]
        let waiting = try store.write { tx -> [String: Int] in
            for id in Int64(1)...3 {
                var job = self.newJob()
                job.limits = id == 3 ? [names[0]] : names
                try tx.insert(job, id: id, now: 0)
            }
            #expect(try tx.job(id: 1)?.limits == names, "the names read back as written")
            _ = try tx.markClaimed(id: 1, token: FencingToken(rawValue: 1), leaseMilliseconds: nil, worker: nil, peer: nil, claimEvent: 1, now: 1)
            return try tx.waitingByLimit([], limit: 10)
        }
        #expect(waiting == [names[0]: 2, names[1]: 1, names[2]: 1])
        let afterward = try store.write { tx -> [String: Int] in
            _ = try tx.markCancelled(id: 2, from: .queued, reason: "x", now: 2)
            try tx.forgetIdleLimitNames(limit: 10)
            return try tx.waitingByLimit([names[1]], limit: 10)
        }
        #expect(afterward == [names[0]: 1, names[1]: 0], "forgetting idle names keeps the others' counts: \(afterward)")
    }

    @Test("WAL, and fsync'd commits unless asked otherwise")
    func durability() throws {
        do {
            let store = try JobStore(path: self.path)
            #expect(try store.journalMode() == "wal")
            #expect(try store.synchronousLevel() == 2)
            try store.close()
        }
        let relaxed = try JobStore(path: self.path, durability: .normal)
        #expect(try relaxed.synchronousLevel() == 1)
    }

    @Test("only one owner at a time")
    func exclusiveOwnership() throws {
        let store = try JobStore(path: self.path)
        #expect(throws: StoreError.self) { try JobStore(path: self.path) }
        withExtendedLifetime(store) {}
    }

    @Test("the claim index orders by priority, then id, and skips delayed jobs")
    func claimOrder() throws {
        let store = try JobStore(path: self.path)
        try store.write { tx in
            let low: Int64 = 1
            let high: Int64 = 2
            try tx.insert(self.newJob(priority: 1), id: low, now: 100)
            try tx.insert(self.newJob(priority: 9), id: high, now: 100)
            try tx.insert(self.newJob(priority: 99, runAt: 500), id: 3, now: 100)
            #expect(try tx.bestReadyJob(queue: "q", admits: { _ in true })?.id == high)
            _ = try tx.markClaimed(id: high, token: FencingToken(rawValue: 1), leaseMilliseconds: nil, worker: nil, peer: nil, claimEvent: 1, now: 100)
            #expect(try tx.bestReadyJob(queue: "q", admits: { _ in true })?.id == low)
            #expect(try tx.nextScheduledRunAt() == 500)
            #expect(try tx.promoteDueJobs(now: 499).isEmpty)
            #expect(try tx.promoteDueJobs(now: 500) == ["q"])
            #expect(try tx.bestReadyJob(queue: "q", admits: { _ in true })?.priority == 99)
        }
    }

    @Test("fenced writes apply only under the current token")
    func fencing() throws {
        let store = try JobStore(path: self.path)
        try store.write { tx in
            let id: Int64 = 1
            try tx.insert(self.newJob(), id: id, now: 0)
            let token = FencingToken(rawValue: 5)
            let (claimed, from) = try #require(try tx.markClaimed(id: id, token: token, leaseMilliseconds: 2_000, worker: "w", peer: nil, claimEvent: 1, now: 0))
            #expect(from == .queued)
            #expect(claimed.attempt == 1)
            #expect(claimed.leaseMilliseconds == 2_000)
            #expect(try tx.job(id: id)?.state == .running)
            #expect(try tx.markClaimed(id: id, token: token.next(), leaseMilliseconds: nil, worker: nil, peer: nil, claimEvent: 2, now: 0) == nil, "a running job is not claimable")
            #expect(try !tx.markCompleted(id: id, token: FencingToken(rawValue: 4), result: nil, now: 1))
            #expect(try tx.markCompleted(id: id, token: token, result: "1", now: 1))
            #expect(try !tx.markCompleted(id: id, token: token, result: "2", now: 2), "already completed")
            #expect(try tx.job(id: id)?.result == "1")
        }
    }

    @Test("sequence reservations survive reopening, only grow, and cover values in use")
    func sequenceReservations() throws {
        do {
            let store = try JobStore(path: self.path)
            try store.write { tx in
                try tx.saveReservation(.token, upTo: 41)
                try tx.saveReservation(.jobID, upTo: 1_024)
                try tx.insert(self.newJob(), id: 2_000, now: 0)
            }
            try store.close()
        }
        let store = try JobStore(path: self.path)
        let marks = try store.write { try $0.sequenceReservations() }
        #expect(marks.token == 41)
        #expect(marks.jobID == 2_000, "a job id above the mark raises it")
        try store.write { tx in try tx.saveReservation(.token, upTo: 3) }
        #expect(try store.write { try $0.sequenceReservations() }.token == 41, "a mark never goes back")
    }

    @Test("a unique key is held only while its job is unfinished")
    func uniqueKey() throws {
        let store = try JobStore(path: self.path)
        try store.write { tx in
            let id: Int64 = 1
            try tx.insert(self.newJob(uniqueKey: "k"), id: id, now: 0)
            #expect(try tx.unfinishedJob(queue: "q", uniqueKey: "k") == id)
            #expect(try tx.unfinishedJob(queue: "other", uniqueKey: "k") == nil)
            _ = try tx.markClaimed(id: id, token: FencingToken(rawValue: 1), leaseMilliseconds: nil, worker: nil, peer: nil, claimEvent: 1, now: 0)
            _ = try tx.markUnsuccessful(id: id, token: FencingToken(rawValue: 1), decision: .fail, error: "x", now: 0)
            #expect(try tx.unfinishedJob(queue: "q", uniqueKey: "k") == nil)
            try tx.insert(self.newJob(uniqueKey: "k"), id: 2, now: 0)
        }
    }
}

@Suite("The claim query plan")
struct ClaimPlanTests {
    @Test("a claim is one probe of the ready index, however many jobs wait or are delayed")
    func claimUsesTheReadyIndex() throws {
        let store = try JobStore(path: try temporaryStorePath())
        let plans = try store.write { tx in
            try [
                StoreTransaction.bestReadyJobSQL,
                StoreTransaction.promoteDueJobsSQL,
                StoreTransaction.prunableJobsSQL,
                StoreTransaction.oldestReadySQL,
            ].map { try tx.queryPlan(of: $0) }
        }
        // An index search with the order taken from the index: no scan, no sort step.
        #expect(plans[0].contains("SEARCH jobs USING COVERING INDEX jobs_ready"), "\(plans[0])")
        #expect(!plans[0].contains("TEMP B-TREE"), "\(plans[0])")
        #expect(plans[1].contains("USING INDEX jobs_scheduled"), "\(plans[1])")
        // Pruning walks the finished jobs oldest first, without sorting them.
        #expect(plans[2].contains("jobs_finished") && !plans[2].contains("TEMP B-TREE"), "\(plans[2])")
        // A queue's oldest ready job is one search of its own index: no pass over the ready jobs.
        #expect(plans[3].contains("SEARCH jobs USING COVERING INDEX jobs_ready_since (queue=?)"), "\(plans[3])")
    }

    @Test("the statements every job passes through build no temporary b-tree")
    func perJobStatementsOpenNoTemporaryTables() throws {
        let store = try JobStore(path: try temporaryStorePath())
        let statements = [
            StoreTransaction.insertJobSQL, StoreTransaction.bestReadyJobSQL, StoreTransaction.claimReadSQL,
            StoreTransaction.claimUpdateSQL, StoreTransaction.completeSQL,
            StoreTransaction.recordEventSQL,
        ]
        let counts = try store.write { tx in try statements.map { try tx.temporaryTables(in: $0) } }
        // The indexes' own predicates count too: SQLite evaluates them on every insert and
        // update, and an `IN` list of three states there once cost each job four b-trees.
        #expect(counts == Array(repeating: 0, count: statements.count), "\(zip(counts, statements).filter { $0.0 > 0 })")
        #expect(try store.write { tx in try tx.temporaryTables(in: "UPDATE jobs SET state = 'x' WHERE id = ? RETURNING id") } > 0)
    }
}

@Suite("The write-ahead log")
struct WriteAheadLogTests {
    /// The frames in a WAL file that belong to its current generation (the salts match the
    /// header's), and whether the last of them ends a transaction.
    static func frames(inWAL path: String) throws -> (count: Int, lastCommits: Bool) {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        func word(_ offset: Int) -> UInt32 { bytes[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) } }
        guard bytes.count >= 32 else { return (0, false) }
        let pageSize = Int(word(8))
        var count = 0
        var lastCommits = false
        var offset = 32
        while offset + 24 + pageSize <= bytes.count, word(offset + 8) == word(16), word(offset + 12) == word(20) {
            count += 1
            lastCommits = word(offset + 4) != 0
            offset += 24 + pageSize
        }
        return (count, lastCommits)
    }

    @Test("a commit's frames are in the WAL file when it returns, even with no fsync to wait for")
    func committedFramesReachTheFile() throws {
        let path = try temporaryStorePath()
        // `normal` never syncs at commit; a crash of the process must still keep the commit,
        // so the frames have to be in the kernel, not in a buffer of this process.
        let store = try JobStore(path: path, durability: .normal)
        let job = NewJob(
            queue: "q", payload: "{}", priority: 0, runAt: 0, maxAttempts: 3,
            backoff: .standard, leaseMilliseconds: 1_000, uniqueKey: nil
        )
        var before = try Self.frames(inWAL: path + "-wal")
        for id in 1...3 {
            try store.write { tx in try tx.insert(job, id: Int64(id), now: 0) }
            let after = try Self.frames(inWAL: path + "-wal")
            #expect(after.count > before.count, "commit \(id) wrote no frame another reader can see")
            #expect(after.lastCommits, "commit \(id)'s last frame is not in the file")
            before = after
        }
        withExtendedLifetime(store) {}
    }

    @Test("a transaction larger than the write buffer commits whole")
    func largeTransaction() throws {
        let path = try temporaryStorePath()
        let payload = "\"" + String(repeating: "p", count: 3_000) + "\""
        do {
            let store = try JobStore(path: path)
            try store.write { tx in
                for id in 1...400 {
                    let job = NewJob(
                        queue: "q", payload: payload, priority: 0, runAt: 0, maxAttempts: 3,
                        backoff: .standard, leaseMilliseconds: 1_000, uniqueKey: nil
                    )
                    try tx.insert(job, id: Int64(id), now: 0)
                }
            }
            #expect(try Self.frames(inWAL: path + "-wal").lastCommits)
            try store.close()
        }
        let reopened = try JobStore(path: path)
        let jobs = try reopened.write { tx in try (1...400).compactMap { try tx.job(id: Int64($0)) } }
        #expect(jobs.count == 400)
        #expect(jobs.allSatisfy { $0.payload == payload })
    }

    @Test("the WAL is checkpointed back to its start instead of growing with every commit")
    func walStaysBounded() throws {
        let path = try temporaryStorePath()
        let store = try JobStore(path: path, durability: .normal)
        let job = NewJob(
            queue: "q", payload: String(repeating: "x", count: 2_000), priority: 0, runAt: 0, maxAttempts: 3,
            backoff: .standard, leaseMilliseconds: 1_000, uniqueKey: nil
        )
        // Each commit runs the claim path's statements, the ones that read a row and stop.
        for round in 1...4_000 {
            try store.write { tx in
                try tx.insert(job, id: Int64(round), now: 0)
                if let ready = try tx.bestReadyJob(queue: "q", admits: { _ in true }) {
                    _ = try tx.markClaimed(id: ready.id, token: FencingToken(rawValue: Int64(round)), leaseMilliseconds: nil, worker: nil, peer: nil, claimEvent: Int64(round), now: 0)
                    _ = try tx.markCompleted(id: ready.id, token: FencingToken(rawValue: Int64(round)), result: nil, now: 0)
                }
            }
        }
        // About 4 pages a commit: 64 MB of WAL if it never restarted; ~4 MB when it does.
        let size = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int ?? 0
        #expect(size < 12 << 20, "the WAL grew to \(size) bytes")
    }
}
