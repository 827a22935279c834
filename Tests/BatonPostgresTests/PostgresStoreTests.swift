import BatonCore
import Foundation
import PostgresNIO
import Testing

@testable import BatonPostgres

@Suite("postgres:// store locations")
struct PostgresLocationTests {
    @Test("a URL names user, host, port and database; a password never shows")
    func parses() throws {
        let tcp = try PostgresLocation("postgres://baton:secret@db.internal:6432/jobs")
        #expect(tcp.user == "baton" && tcp.password == "secret" && tcp.host == "db.internal" && tcp.port == 6432)
        #expect(tcp.database == "jobs" && tcp.tls == .prefer)
        #expect(tcp.description == "postgres://baton:***@db.internal:6432/jobs")
        let socket = try PostgresLocation("postgresql://baton@/jobs?host=/run/postgresql&sslmode=disable")
        #expect(socket.host == "/run/postgresql" && socket.port == 5432 && socket.tls == .disable)
        #expect(PostgresLocation.isLocation("postgres://x@y/z") && !PostgresLocation.isLocation("baton-data/baton.db"))
    }

    @Test("a URL that cannot be used says why, without its password")
    func refuses() {
        for (url, complaint) in [
            ("postgres://db.internal/jobs", "names no user"),
            ("postgres://baton:secret@db.internal/", "names no database"),
            ("postgres://baton@/jobs", "names no host"),
            ("postgres://baton:secret@db/jobs?sslmode=maybe", "sslmode must be"),
            ("postgres://baton:secret@db/jobs?pool=3", "unknown parameter pool"),
        ] {
            #expect {
                try PostgresLocation(url)
            } throws: { error in
                "\(error)".contains(complaint) && !"\(error)".contains("secret")
            }
        }
    }
}

@Suite(
    "PostgreSQL store: one job store for many hosts",
    .enabled(if: ScratchDatabase.server != nil, "\(ScratchDatabase.missing)")
)
struct PostgresStoreTests {
    static func job(
        _ queue: String = "q", priority: Int64 = 0, uniqueKey: String? = nil, concurrencyKey: String? = nil, maxAttempts: Int = 3
    ) -> NewJob {
        NewJob(
            queue: queue, payload: #"{"n": 1}"#, priority: priority, runAt: 0, maxAttempts: maxAttempts,
            backoff: BackoffPolicy(initialMilliseconds: 0, factor: 1, maximumMilliseconds: 0), leaseMilliseconds: 30_000,
            uniqueKey: uniqueKey, concurrencyKey: concurrencyKey
        )
    }

    /// Three stores on one database, as three hosts' `batond` would open it.
    static func withHosts<Result>(_ count: Int = 3, _ body: ([PostgresStore]) async throws -> Result) async throws -> Result {
        try await ScratchDatabase.with { location in
            // Every host migrates at start, all at once: one applies, the others wait and find it done.
            let hosts = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
                for _ in 0..<count {
                    group.addTask { try await PostgresStore.open(location, logger: ScratchDatabase.logger) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            do {
                let result = try await body(hosts)
                for host in hosts { await host.close() }
                return result
            } catch {
                for host in hosts { await host.close() }
                throw error
            }
        }
    }

    @Test("hosts that start at once migrate the schema once")
    func concurrentMigration() async throws {
        try await Self.withHosts { hosts in
            for host in hosts {
                let versions = try await host.schemaVersions()
                #expect(versions == PostgresSchema.migrations.map(\.version))
            }
        }
    }

    @Test("three hosts drain 300 jobs: each job leased once, tokens unique and rising on every host")
    func drain() async throws {
        try await Self.withHosts { hosts in
            try await hosts[0].write { tx in
                for _ in 0..<300 { _ = try await tx.insert(Self.job()) }
            }
            // Each host claims and completes in its own transactions until nothing is left.
            let claims = try await withThrowingTaskGroup(of: [PostgresTransaction.Claim].self) { group in
                for (index, host) in hosts.enumerated() {
                    group.addTask {
                        var mine: [PostgresTransaction.Claim] = []
                        while let claim = try await host.write({ tx in
                            try await tx.claim(queues: ["q"], leaseMilliseconds: nil, host: "host-\(index)", worker: nil, peer: nil)
                        }) {
                            #expect(try await host.write { try await $0.complete(id: claim.job.id, token: claim.token, result: nil) })
                            mine.append(claim)
                        }
                        return mine
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let all = claims.flatMap { $0 }
            #expect(all.count == 300)
            #expect(Set(all.map(\.job.id)).count == 300, "no job was leased twice")
            #expect(Set(all.map(\.token)).count == 300, "no token was issued twice")
            for mine in claims {
                #expect(mine.map(\.token) == mine.map(\.token).sorted(), "a host's tokens rise claim after claim")
            }
            #expect(claims.filter { !$0.isEmpty }.count >= 2, "the hosts shared the work")
            // A claim that starts after another ended gets a larger token, whichever host makes it.
            var last = all.map(\.token).max()!
            for host in hosts {
                _ = try await host.write { try await $0.insert(Self.job()) }
                let claim = try #require(
                    try await host.write { try await $0.claim(queues: ["q"], leaseMilliseconds: nil, host: "h", worker: nil, peer: nil) })
                #expect(claim.token > last)
                last = claim.token
            }
        }
    }

    @Test("a claim takes the best job across its queues, and passes over a paused queue")
    func bestAcrossQueues() async throws {
        try await Self.withHosts(1) { hosts in
            let store = hosts[0]
            let (low, high, paused) = try await store.write { tx in
                (try await tx.insert(Self.job("a", priority: 1)).id, try await tx.insert(Self.job("b", priority: 5)).id,
                 try await tx.insert(Self.job("c", priority: 9)).id)
            }
            try await store.write { tx in
                try await tx.connection.query("INSERT INTO queues (name, paused) VALUES ('c', true)", logger: tx.logger)
            }
            func claim() async throws -> Int64? {
                try await store.write { try await $0.claim(queues: ["a", "b", "c"], leaseMilliseconds: nil, host: "h", worker: nil, peer: nil) }?.job.id
            }
            #expect(try await claim() == high)
            #expect(try await claim() == low)
            #expect(try await claim() == nil)
            #expect(try await store.write { try await $0.state(of: paused) } == .queued)
        }
    }

    @Test("a job one host is claiming is skipped by the others, not waited for")
    func claimsDoNotWait() async throws {
        try await Self.withHosts(2) { hosts in
            let (first, second) = try await hosts[0].write { tx in
                (try await tx.insert(Self.job()).id, try await tx.insert(Self.job()).id)
            }
            let otherClaimed = Flag()
            // Host 0 claims and holds its transaction open until host 1 has claimed too.
            async let holding: Int64? = hosts[0].write { tx in
                let claim = try await tx.claim(queues: ["q"], leaseMilliseconds: nil, host: "a", worker: nil, peer: nil)
                #expect(await otherClaimed.wait(seconds: 10), "host 1's claim waited for host 0's transaction")
                return claim?.job.id
            }
            try await Task.sleep(for: .milliseconds(50))
            let other = try await hosts[1].write { tx in
                try await tx.claim(queues: ["q"], leaseMilliseconds: nil, host: "b", worker: nil, peer: nil)
            }
            await otherClaimed.set()
            let held = try await holding
            #expect(Set([held, other?.job.id]) == Set([first, second]))
        }
    }

    @Test("a lease runs out by the database's clock: any host expires it, and its token is refused everywhere")
    func leaseExpiry() async throws {
        try await Self.withHosts { hosts in
            let id = try await hosts[0].write { try await $0.insert(Self.job()).id }
            let claim = try #require(
                try await hosts[0].write { try await $0.claim(queues: ["q"], leaseMilliseconds: 300, host: "a", worker: nil, peer: nil) })
            let now = try await hosts[1].write { try await $0.now() }
            #expect((claim.deadline - now) > 0 && (claim.deadline - now) <= 300, "the deadline is the database's now plus the lease")
            // Live: a renewal from another host keeps it.
            #expect(try await hosts[1].write { try await $0.renew(id: id, token: claim.token) } != nil)
            // Gone quiet: once the deadline passes, no host accepts the token, and one expires it.
            try await waitUntil { try await hosts[2].write { try await $0.now() } > claim.deadline + 300 }
            for host in hosts {
                #expect(try await host.write { try await $0.renew(id: id, token: claim.token) } == nil)
            }
            let expired = try await hosts[2].write { try await $0.expireOverdueLeases(limit: 10) { 0 } }
            #expect(expired.map(\.id) == [id] && expired.first?.decision.state == .retrying)
            #expect(try await hosts[1].write { try await $0.expireOverdueLeases(limit: 10) { 0 } }.isEmpty, "expired once")
            _ = try await hosts[1].write { try await $0.promoteDueJobs() }
            let again = try #require(
                try await hosts[1].write { try await $0.claim(queues: ["q"], leaseMilliseconds: nil, host: "b", worker: nil, peer: nil) })
            #expect(again.job.id == id && again.job.attempt == 2 && again.token > claim.token && again.from == .retrying)
            #expect(!(try await hosts[0].write { try await $0.complete(id: id, token: claim.token, result: nil) }), "the old token is fenced off")
            #expect(try await hosts[2].write { try await $0.complete(id: id, token: again.token, result: "1") })
        }
    }

    /// Workers on every host claim from `queues` and complete, holding each job for `hold`,
    /// until nothing is claimable; meanwhile a monitor samples what runs. Returns the
    /// samples, each the running jobs' (queue, concurrency key) pairs, and how many jobs
    /// were completed.
    static func drainWhileWatching(
        _ hosts: [PostgresStore], queues: [String], workersPerHost: Int, hold: Duration = .milliseconds(20)
    ) async throws -> (samples: [[(queue: String, key: String?)]], completed: Int) {
        let done = Flag()
        async let samples: [[(queue: String, key: String?)]] = {
            var samples: [[(queue: String, key: String?)]] = []
            while !(await done.isSet) {
                let running = try await hosts[0].write { tx in
                    var running: [(queue: String, key: String?)] = []
                    for try await (queue, key) in try await tx.connection.query(
                        "SELECT queue, concurrency_key FROM jobs WHERE state = 'running'", logger: tx.logger
                    ).decode((String, String?).self) {
                        running.append((queue, key))
                    }
                    return running
                }
                samples.append(running)
            }
            return samples
        }()
        let completed = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, host) in hosts.enumerated() {
                for worker in 0..<workersPerHost {
                    group.addTask {
                        var completed = 0
                        while let claim = try await host.write({ tx in
                            try await tx.claim(queues: queues, leaseMilliseconds: nil, host: "h\(index)", worker: "w\(worker)", peer: nil)
                        }) {
                            try await Task.sleep(for: hold)
                            #expect(try await host.write { try await $0.complete(id: claim.job.id, token: claim.token, result: nil) })
                            completed += 1
                        }
                        return completed
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        await done.set()
        return (try await samples, completed)
    }

    @Test("a concurrency key is held fleet-wide: three hosts under load never run two jobs with one key")
    func concurrencyKeys() async throws {
        try await Self.withHosts { hosts in
            try await hosts[1].write { tx in
                for n in 0..<90 { _ = try await tx.insert(Self.job(concurrencyKey: "tenant-\(n % 3)")) }
            }
            let (samples, completed) = try await Self.drainWhileWatching(hosts, queues: ["q"], workersPerHost: 3)
            #expect(completed == 90)
            #expect(samples.count > 10, "the monitor saw the drain")
            for running in samples {
                let keys = running.compactMap(\.key)
                #expect(Set(keys).count == keys.count, "two running jobs share a key: \(keys.sorted())")
            }
            #expect(samples.contains { $0.count >= 2 }, "jobs with different keys ran side by side")
            let left = try await hosts[2].write { tx in
                try await tx.connection.query("SELECT count(*) FROM concurrency_keys", logger: tx.logger).first(Int.self)
            }
            #expect(left == 0, "every finished job freed its key")
        }
    }

    @Test("a queue's max_running holds across three hosts under load")
    func queueLimit() async throws {
        try await Self.withHosts { hosts in
            try await hosts[0].write { tx in
                _ = try await tx.changeQueueSettings("limited", QueueSettings.Change(maxRunning: 2))
                for _ in 0..<60 { _ = try await tx.insert(Self.job("limited")) }
                for _ in 0..<60 { _ = try await tx.insert(Self.job("open")) }
            }
            let (samples, completed) = try await Self.drainWhileWatching(hosts, queues: ["limited", "open"], workersPerHost: 3)
            #expect(completed == 120)
            let most = samples.map { $0.filter { $0.queue == "limited" }.count }.max() ?? 0
            #expect(most <= 2, "at most 2 jobs of the limited queue ran at once; saw \(most)")
            #expect(samples.contains { $0.filter { $0.queue == "open" }.count > 2 }, "the open queue was not held to the limit")
        }
    }

    @Test("a host hears at once which queues and limits another host announces")
    func wakeUps() async throws {
        try await Self.withHosts(2) { hosts in
            let heard = Heard()
            let listening = Flag()
            let listener = Task {
                try await hosts[0].listenForWakeups(listening: { Task { await listening.set() } }) { wakeup in
                    Task { await heard.add(wakeup) }
                }
            }
            defer { listener.cancel() }
            #expect(await listening.wait(seconds: 10))
            try await hosts[1].announce(readyQueues: ["emails", "reports"], freedLimits: ["openai"])
            try await waitUntil { await heard.wakeups.count >= 3 }
            #expect(await Set(heard.wakeups) == [.ready(queue: "emails"), .ready(queue: "reports"), .limitFreed("openai")])
        }
    }

    /// Claims the next job of `queue` on `host`.
    static func claim(_ host: PostgresStore, _ queue: String = "q", lease: Int64? = nil) async throws -> PostgresTransaction.Claim? {
        try await host.write { try await $0.claim(queues: [queue], leaseMilliseconds: lease, host: "h", worker: nil, peer: nil) }
    }

    @Test("fail retries by the backoff until the attempts run out; release gives the attempt back")
    func failAndRelease() async throws {
        try await Self.withHosts(2) { hosts in
            let id = try await hosts[0].write { try await $0.insert(Self.job(maxAttempts: 2)).id }
            let first = try #require(try await Self.claim(hosts[0]))
            #expect(try await hosts[1].write { try await $0.markReleased(id: id, token: first.token, runAt: 0) } == "q")
            #expect(try await hosts[1].write { try await $0.markReleased(id: id, token: first.token, runAt: 0) } == nil, "once")
            let again = try #require(try await Self.claim(hosts[1]))
            #expect(again.job.attempt == 1, "a release does not spend the attempt")
            let now = try await hosts[0].write { try await $0.now() }
            let retry = RetryDecision.afterUnsuccessfulAttempt(1, maxAttempts: 2, backoff: .standard, jitter: 0, now: now)
            #expect(try await hosts[0].write { try await $0.markUnsuccessful(id: id, token: again.token, decision: retry, error: "boom") })
            #expect(try await hosts[0].write { try await $0.state(of: id) } == .retrying)
            #expect(try await Self.claim(hosts[0]) == nil, "not before its backoff")
            try await hosts[0].write { tx in
                try await tx.connection.query("UPDATE jobs SET run_at = 0 WHERE id = \(id)", logger: tx.logger)
                _ = try await tx.promoteDueJobs()
            }
            let last = try #require(try await Self.claim(hosts[1]))
            #expect(last.job.attempt == 2 && last.from == .retrying)
            #expect(try await hosts[1].write { try await $0.markUnsuccessful(id: id, token: last.token, decision: .fail, error: "boom") })
            #expect(try await hosts[0].write { try await $0.state(of: id) } == .failed)
            #expect(!(try await hosts[0].write { try await $0.markUnsuccessful(id: id, token: last.token, decision: .fail, error: "x") }))
        }
    }

    @Test("a checkpoint renews the lease and reaches the next attempt; a stale token's checkpoint is refused")
    func checkpoints() async throws {
        try await Self.withHosts(2) { hosts in
            let id = try await hosts[0].write { try await $0.insert(Self.job()).id }
            let first = try #require(try await Self.claim(hosts[0], lease: 60_000))
            let deadline = try await hosts[1].write {
                try await $0.saveCheckpoint(id: id, token: first.token, state: #"{"stage": 2}"#, progress: #"{"percent": 50}"#)
            }
            #expect(deadline != nil && deadline! >= first.deadline)
            #expect(try await hosts[1].write { try await $0.saveProgress(id: id, token: first.token, progress: #"{"percent": 60}"#) })
            _ = try await hosts[0].write { try await $0.markReleased(id: id, token: first.token, runAt: 0) }
            let second = try #require(try await Self.claim(hosts[1]))
            #expect(second.job.checkpoint == #"{"stage": 2}"# && second.job.progress == #"{"percent": 60}"#)
            #expect(try await hosts[0].write { try await $0.saveCheckpoint(id: id, token: first.token, state: "1", progress: nil) } == nil)
            #expect(!(try await hosts[0].write { try await $0.saveProgress(id: id, token: first.token, progress: "1") }))
        }
    }

    @Test("an operator cancels, pauses, resumes and retries; the holder's token is refused and its key freed")
    func operatorMoves() async throws {
        try await Self.withHosts(2) { hosts in
            let (a, b) = try await hosts[0].write { tx in
                (try await tx.insert(Self.job(concurrencyKey: "k")).id, try await tx.insert(Self.job(concurrencyKey: "k")).id)
            }
            let running = try #require(try await Self.claim(hosts[0]))
            #expect(running.job.id == a)
            #expect(try await Self.claim(hosts[1]) == nil, "b waits for the key")
            #expect(try await hosts[1].write { try await $0.markPaused(id: a, from: .running) })
            #expect(try await hosts[0].write { try await $0.renew(id: a, token: running.token) } == nil)
            let next = try #require(try await Self.claim(hosts[1]), "pausing a freed its key")
            #expect(next.job.id == b)
            #expect(try await hosts[0].write { try await $0.markCancelled(id: b, from: .running, reason: "not needed") })
            #expect(!(try await hosts[1].write { try await $0.complete(id: b, token: next.token, result: nil) }))
            #expect(try await hosts[0].write { try await $0.markResumed(id: a) }?.queue == "q")
            let resumed = try #require(try await Self.claim(hosts[0]))
            #expect(resumed.job.id == a && resumed.job.attempt == 1, "a pause gives the attempt back")
            #expect(try await hosts[1].write { try await $0.markRetried(id: b, from: .cancelled) } == "q")
            #expect(try await hosts[1].write { try await $0.markRetried(id: b, from: .cancelled) } == nil, "once")
            #expect(try await hosts[1].write { try await $0.state(of: b) } == .queued)
            await #expect(throws: (any Error).self) { try await hosts[1].write { try await $0.markPaused(id: b, from: .completed) } }
        }
    }

    @Test("a batch's claims are served by one statement per queue set: best jobs first, limits and keys held within it")
    func claimsInOneBatch() async throws {
        try await Self.withHosts(1) { hosts in
            let ids = try await hosts[0].write { tx in
                _ = try await tx.changeQueueSettings("limited", QueueSettings.Change(maxRunning: 2))
                var ids: [String: [Int64]] = [:]
                for priority in [1, 3, 2] as [Int64] { ids["open", default: []].append(try await tx.insert(Self.job("open", priority: priority)).id) }
                for _ in 0..<4 { ids["limited", default: []].append(try await tx.insert(Self.job("limited", priority: 5)).id) }
                for _ in 0..<3 { ids["keyed", default: []].append(try await tx.insert(Self.job("keyed", concurrencyKey: "k")).id) }
                return ids
            }
            let wishes = [
                PostgresTransaction.ClaimWish(queues: ["open"], leaseMilliseconds: 5_000, worker: "a"),
                PostgresTransaction.ClaimWish(queues: ["limited", "open"], worker: "b"),
                PostgresTransaction.ClaimWish(queues: ["open"], leaseMilliseconds: 60_000, worker: "c"),
                PostgresTransaction.ClaimWish(queues: ["limited", "open"]),
                PostgresTransaction.ClaimWish(queues: ["limited", "open"]),
                PostgresTransaction.ClaimWish(queues: ["keyed"]),
                PostgresTransaction.ClaimWish(queues: ["keyed"]),
                PostgresTransaction.ClaimWish(queues: ["open"]),
            ]
            let claims = try await hosts[0].write { try await $0.claim(wishes, host: "h") }
            let open = ids["open"]!, limited = ids["limited"]!
            // Claims naming the same queues are served together, in the order the first of
            // each set arrived: the three "open" claims take open's jobs best first; then the
            // limited queue gives its two places, and the third such claim finds nothing left.
            // One of the keyed jobs runs; the other two wait for the key.
            #expect(claims.map { $0?.job.id } == [open[1], limited[0], open[2], limited[1], nil, ids["keyed"]![0], nil, open[0]])
            #expect(claims[0]!.job.leaseMilliseconds == 5_000 && claims[2]!.job.leaseMilliseconds == 60_000)
            #expect(claims[2]!.deadline - claims[0]!.deadline >= 50_000, "each wish's own lease period")
            #expect(Set(claims.compactMap { $0?.token }).count == 6)
            let worker = try await hosts[0].write { tx in
                try await tx.connection.query("SELECT worker FROM jobs WHERE id = \(claims[1]!.job.id)", logger: tx.logger).first(String.self)
            }
            #expect(worker == "b")
        }
    }

    @Test("a batch's enqueues, renewals and completions are one statement each, answered per request")
    func writesInOneBatch() async throws {
        try await Self.withHosts(2) { hosts in
            let inserted = try await hosts[0].write { tx in
                try await tx.insert([Self.job(uniqueKey: "a"), Self.job(), Self.job(uniqueKey: "a"), Self.job(uniqueKey: "b")])
            }
            #expect(inserted.map(\.inserted) == [true, true, false, true])
            #expect(inserted[2].id == inserted[0].id, "a key taken earlier in the same batch names that job")
            #expect(Set(inserted.map(\.id)).count == 3)
            let claims = try await hosts[1].write { tx in
                try await tx.claim(Array(repeating: PostgresTransaction.ClaimWish(queues: ["q"]), count: 3), host: "b")
            }.compactMap { $0 }
            #expect(claims.count == 3)
            let stale = FencingToken(rawValue: claims[0].token.rawValue + 1_000)
            let renewed = try await hosts[0].write { tx in
                try await tx.renew([(claims[0].job.id, claims[0].token, 90_000), (claims[1].job.id, stale, nil), (claims[2].job.id, claims[2].token, nil)])
            }
            #expect(renewed[0] != nil && renewed[1] == nil && renewed[2] != nil)
            #expect(renewed[0]! - renewed[2]! > 50_000, "a renewal with its own period keeps it")
            let completed = try await hosts[1].write { tx in
                try await tx.complete([
                    (claims[0].job.id, claims[0].token, #"{"pages": 3}"#), (claims[1].job.id, stale, nil),
                    (claims[2].job.id, claims[2].token, nil), (claims[0].job.id, claims[0].token, "2"),
                ])
            }
            #expect(completed.map { $0 != nil } == [true, false, true, false])
            #expect(completed[0]?.queue == "q" && completed[0]?.startedAt != nil)
            let results = try await hosts[0].write { tx in
                var results: [Int64: String?] = [:]
                for try await (id, result) in try await tx.connection.query(
                    "SELECT id, result FROM jobs WHERE state = 'completed'", logger: tx.logger).decode((Int64, String?).self)
                {
                    results[id] = result
                }
                return results
            }
            #expect(results == [claims[0].job.id: #"{"pages": 3}"#, claims[2].job.id: nil])
        }
    }

    @Test("the audit trail keeps a batch's events in order, and a job reads back whole")
    func trailAndReads() async throws {
        try await Self.withHosts(2) { hosts in
            let id = try await hosts[0].write { try await $0.insert(Self.job(uniqueKey: "u", concurrencyKey: "c")).id }
            let claim = try #require(try await Self.claim(hosts[1]))
            try await hosts[1].write { tx in
                try await tx.recordEvents([
                    (id, JobEvent(.enqueued, at: 1, state: .queued)),
                    (id, JobEvent(.claimed, at: 2, state: .running, token: claim.token, peerPID: 42, detail: "w1")),
                    (id, JobEvent(.failed, at: 3, state: .retrying, token: claim.token, detail: "")),
                ])
            }
            let events = try await hosts[0].write { try await $0.events(of: id) }
            #expect(events.map(\.kind) == [.enqueued, .claimed, .failed])
            #expect(events[1].token == claim.token && events[1].peerPID == 42 && events[1].detail == "w1")
            #expect(events[0].token == nil && events[0].detail == nil && events[2].detail == "", "absent and empty stay apart")
            let job = try #require(try await hosts[0].write { try await $0.job(id: id) })
            #expect(job.state == .running && job.uniqueKey == "u" && job.concurrencyKey == "c" && job.leaseToken == claim.token)
            #expect(job.payload == #"{"n": 1}"# && job.attempts == 1 && job.backoff.factor == 1 && job.parent == nil)
            #expect(try await hosts[0].write { try await $0.job(id: id + 100) } == nil)
        }
    }

    @Test("job counts are the sum of every host's share; hosts report in; one host at a time does a chore")
    func fleetBookkeeping() async throws {
        try await Self.withHosts(2) { hosts in
            try await hosts[0].write { tx in
                try await tx.addToCounts(host: "a", [("q", .queued, 3)])
                try await tx.hostSeen("a", startedAt: 10)
            }
            try await hosts[1].write { tx in
                try await tx.addToCounts(host: "b", [("q", .queued, -2), ("q", .running, 1), ("q", .running, 1), ("r", .queued, 0)])
                try await tx.hostSeen("b", startedAt: 20)
            }
            let counts = try await hosts[0].write { try await $0.jobCounts() }
            #expect(counts == ["q": [.queued: 1, .running: 2]])
            #expect(try await hosts[1].write { try await $0.hosts(seenWithin: 60_000) }.map(\.name) == ["a", "b"])
            // Host 0 holds the chore in an open transaction; host 1 is turned away until it ends.
            let holding = Flag()
            let done = Flag()
            async let held: Bool = hosts[0].write { tx in
                let took = try await tx.take(.retention)
                await holding.set()
                _ = await done.wait(seconds: 10)
                return took
            }
            #expect(await holding.wait(seconds: 10))
            #expect(!(try await hosts[1].write { try await $0.take(.retention) }))
            await done.set()
            #expect(try await held)
            #expect(try await hosts[1].write { try await $0.take(.retention) }, "free again once that transaction ended")
        }
    }

    @Test("retention deletes the oldest finished jobs past their cut-off, with their events")
    func retention() async throws {
        try await Self.withHosts(1) { hosts in
            let store = hosts[0]
            let ids = try await store.write { tx in try await tx.insert([Self.job(), Self.job(), Self.job()]).map(\.id) }
            for _ in 0..<3 {
                let claim = try #require(try await Self.claim(store))
                #expect(try await store.write { try await $0.complete(id: claim.job.id, token: claim.token, result: nil) })
            }
            try await store.write { tx in
                try await tx.recordEvents([(ids[0], JobEvent(.completed, at: 1, state: .completed))])
                try await tx.connection.query("UPDATE jobs SET finished_at = id * 100", logger: tx.logger)
            }
            let pruned = try await store.write { try await $0.pruneFinishedJobs(completedBefore: ids[1] * 100 + 1, failedBefore: 0, limit: 10) }
            #expect(pruned.count == 2 && pruned.allSatisfy { $0.queue == "q" && $0.state == .completed })
            #expect(try await store.write { try await $0.job(id: ids[0]) } == nil)
            #expect(try await store.write { try await $0.events(of: ids[0]) }.isEmpty)
            #expect(try await store.write { try await $0.job(id: ids[2]) } != nil)
        }
    }

    @Test("a dependent waits for its dependencies, even when one completes on another host while it is enqueued")
    func dependencies() async throws {
        try await Self.withHosts(2) { hosts in
            let (first, second) = try await hosts[0].write { tx in
                (try await tx.insert(Self.job("deps")).id, try await tx.insert(Self.job("deps")).id)
            }
            let claims = try await hosts[1].write { try await $0.claim(Array(repeating: .init(queues: ["deps"]), count: 2), host: "b") }
            // Host 0 enqueues the dependent, holding its transaction open while host 1
            // completes the first dependency: the completion must wait, then count it.
            let read = Flag()
            let completing = Flag()
            async let dependent: Int64 = hosts[0].write { tx in
                let states = try await tx.states(of: [first, second])
                #expect(states == [first: .running, second: .running])
                await read.set()
                _ = await completing.wait(seconds: 1)
                let id = try await tx.insert(Self.job("after")).id
                try await tx.addDependencies(job: id, on: [first, second])
                return id
            }
            #expect(await read.wait(seconds: 10))
            async let completed: (Bool, Int) = hosts[1].write { tx in
                await completing.set()
                let done = try await tx.complete(id: first, token: claims[0]!.token, result: nil)
                return (done, try await tx.dependencyCompleted(first).count)
            }
            let id = try await dependent
            let (done, freedEarly) = try await completed
            #expect(done && freedEarly == 0, "the second dependency is still running")
            #expect(try await hosts[1].write { try await $0.unfinishedDependents(of: second) }.map(\.id) == [id])
            #expect(try await Self.claim(hosts[0], "after") == nil, "still waiting on the second")
            let freed = try await hosts[1].write { tx in
                #expect(try await tx.complete(id: second, token: claims[1]!.token, result: nil))
                return try await tx.dependencyCompleted(second)
            }
            #expect(freed.map(\.id) == [id] && freed[0].queue == "after")
            #expect(try await Self.claim(hosts[0], "after")?.job.id == id)
        }
    }

    @Test("list pages by id both ways; the oldest ready job and the next scheduled time are one probe each")
    func listsAndProbes() async throws {
        try await Self.withHosts(1) { hosts in
            let store = hosts[0]
            var later = Self.job("b")
            later.runAt = Int64.max / 2
            let ids = try await store.write { tx in try await tx.insert([Self.job("a"), Self.job("b"), Self.job("a"), later]).map(\.id) }
            let newest = try await store.write { try await $0.listJobs(JobListing(queue: nil, state: nil, after: nil, limit: 3, oldestFirst: false)).jobs.map(\.job) }
            #expect(newest.map(\.id) == [ids[3], ids[2], ids[1]])
            let next = try await store.write { try await $0.listJobs(JobListing(queue: nil, state: nil, after: ids[1], limit: 3, oldestFirst: false)).jobs.map(\.job) }
            #expect(next.map(\.id) == [ids[0]])
            let oldestA = try await store.write { try await $0.listJobs(JobListing(queue: "a", state: .queued, after: nil, limit: 10, oldestFirst: true)).jobs.map(\.job) }
            #expect(oldestA.map(\.id) == [ids[0], ids[2]])
            #expect(try await store.write { try await $0.oldestReady(queue: "a") }?.job == ids[0])
            #expect(try await store.write { try await $0.oldestReady(queue: "none") } == nil)
            #expect(try await store.write { try await $0.nextScheduledRunAt() } == Int64.max / 2)
        }
    }

    @Test("atomically undoes only its own writes")
    func savepoints() async throws {
        try await Self.withHosts(1) { hosts in
            struct Refused: Error {}
            let kept = try await hosts[0].write { tx in
                let kept = try await tx.insert(Self.job()).id
                await #expect(throws: Refused.self) {
                    try await tx.atomically {
                        _ = try await tx.insert(Self.job())
                        throw Refused()
                    }
                }
                let also = try await tx.atomically { try await tx.insert(Self.job()).id }
                return [kept, also]
            }
            let all = try await hosts[0].write { try await $0.listJobs(JobListing(queue: nil, state: nil, after: nil, limit: 10, oldestFirst: true)).jobs.map(\.job) }
            #expect(all.map(\.id) == kept)
        }
    }

    @Test("a batch's failures, releases, checkpoints and progress are one statement each, answered per request")
    func endingsInOneBatch() async throws {
        try await Self.withHosts(2) { hosts in
            _ = try await hosts[0].write { tx in try await tx.insert(Array(repeating: Self.job(maxAttempts: 2), count: 5)) }
            let claims = try await hosts[1].write { tx in
                try await tx.claim(Array(repeating: PostgresTransaction.ClaimWish(queues: ["q"]), count: 5), host: "b")
            }.map { $0! }
            let stale = FencingToken(rawValue: claims[4].token.rawValue + 1_000)
            let now = try await hosts[0].write { try await $0.now() }
            let (progress, saved, ended, released) = try await hosts[0].write { tx in
                let progress = try await tx.saveProgress([(claims[0].job.id, claims[0].token, "10"), (claims[4].job.id, stale, "10")])
                let saved = try await tx.saveCheckpoints([(claims[0].job.id, claims[0].token, "1", nil), (claims[1].job.id, claims[1].token, "2", "50")])
                let ended = try await tx.endAttempts([
                    (claims[0].job.id, claims[0].token, .retry(runAt: now + 60_000), "later"),
                    (claims[1].job.id, claims[1].token, .fail, "for good"),
                    (claims[4].job.id, stale, .fail, "not mine"),
                ])
                let released = try await tx.release([(claims[2].job.id, claims[2].token, 0), (claims[1].job.id, claims[1].token, 0)])
                return (progress, saved, ended, released)
            }
            #expect(progress == [true, false])
            #expect(saved.allSatisfy { $0 != nil })
            #expect(ended == [true, true, false])
            #expect(released == ["q", nil], "a job that failed in the same batch is no longer the token's")
            let jobs = try await hosts[1].write { tx in try await tx.listJobs(JobListing(queue: "q", state: nil, after: nil, limit: 10, oldestFirst: true)).jobs.map(\.job) }
            let byID = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0) })
            let first = byID[claims[0].job.id]!, second = byID[claims[1].job.id]!, third = byID[claims[2].job.id]!
            #expect(first.state == .retrying && first.lastError == "later" && first.runAt == now + 60_000 && first.checkpoint == "1")
            #expect(first.progress == "10")
            #expect(second.state == .failed && second.lastError == "for good" && second.finishedAt != nil && second.progress == "50")
            #expect(third.state == .queued && third.attempts == 0)
            #expect(byID[claims[4].job.id]!.state == .running)
        }
    }

    @Test("a unique key is held fleet-wide by the unfinished job")
    func uniqueKeys() async throws {
        try await Self.withHosts(2) { hosts in
            let first = try await hosts[0].write { try await $0.insert(Self.job(uniqueKey: "doc-7")) }
            let second = try await hosts[1].write { try await $0.insert(Self.job(uniqueKey: "doc-7")) }
            #expect(first.inserted && !second.inserted && second.id == first.id)
        }
    }
}

/// What a listener heard.
actor Heard {
    private(set) var wakeups: [PostgresStore.Wakeup] = []
    func add(_ wakeup: PostgresStore.Wakeup) { self.wakeups.append(wakeup) }
}

/// A one-way signal between two tasks of a test.
actor Flag {
    private(set) var isSet = false
    func set() { self.isSet = true }
    /// Whether it was set within `seconds`.
    func wait(seconds: Double) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !self.isSet, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return self.isSet
    }
}

/// Polls `condition` until it holds; fails the test after ten seconds.
func waitUntil(_ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while try await !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("the condition never held")
            return
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}
