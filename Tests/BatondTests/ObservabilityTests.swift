import BatonTestSupport
import Foundation
import Testing

@Suite("Metrics, health, workers and logs")
struct ObservabilityTests {
    @Test("counters and histograms move as jobs flow (enqueue 10, complete 7, fail 3); refused writes count nothing")
    func countersFollowTheJobs() throws {
        let server = try TestServer()
        let client = try server.connect()
        for index in 0..<10 {
            _ = try client.enqueue(queue: "flow", payload: index, ["max_attempts": 1])
        }
        for index in 0..<10 {
            let job = try #require(try client.claim(queues: ["flow"]))
            if index < 7 {
                #expect(try client.fenced("complete", job).ok)
            } else {
                #expect(try client.fenced("fail", job, ["error": "bad input"]).string("state") == "failed")
            }
        }
        let stale = try client.request(["op": "heartbeat", "job": 1, "token": 424_242])
        #expect(stale.errorCode == "lease_lost")
        // A batch refused as a whole enqueues nothing, and counts nothing.
        let refused = try client.request(["op": "enqueue_batch", "jobs": [["queue": "flow", "payload": 1], ["queue": "flow"]]])
        #expect(refused.errorCode == "invalid_argument")
        let follow = try client.enqueue(queue: "flow", payload: "last")
        let lease = try #require(try client.claim(queues: ["flow"]))
        #expect(lease.id == follow)
        let unknownDependency = try client.fenced("complete", lease, ["enqueue": [["queue": "flow", "payload": 1, "after": [999_999]]]])
        #expect(unknownDependency.errorCode == "invalid_argument", "a refused follow-up undoes the completion")
        #expect(try client.fenced("fail", lease, ["error": "gave up", "retry": false]).ok)

        let metrics = try client.request(["op": "metrics", "format": "json"])
        #expect(metrics.string("format") == "json")
        let samples = try #require(metrics.fields["samples"] as? [[String: Any]])
        func value(_ name: String, _ labels: [String: String] = ["queue": "flow"]) -> Double? {
            samples.first { $0["name"] as? String == name && ($0["labels"] as? [String: String]) == labels }
                .flatMap { ($0["value"] as? NSNumber)?.doubleValue }
        }
        #expect(value("baton_jobs_enqueued_total") == 11)
        #expect(value("baton_jobs_claimed_total") == 11)
        #expect(value("baton_jobs_completed_total") == 7)
        #expect(value("baton_jobs_failed_total") == 4)
        #expect(value("baton_jobs_retried_total") == 0)
        #expect(value("baton_stale_token_refusals_total", [:]) == 1)
        #expect(value("baton_jobs", ["queue": "flow", "state": "completed"]) == 7)
        #expect(value("baton_jobs", ["queue": "flow", "state": "failed"]) == 4)
        #expect(value("baton_connections", [:]) == 1)
        let histograms = try #require(metrics.fields["histograms"] as? [[String: Any]])
        func histogram(_ name: String) -> [String: Any]? {
            histograms.first { $0["name"] as? String == name && ($0["labels"] as? [String: String])?["queue"] == "flow" }
        }
        #expect(histogram("baton_job_wait_seconds")?["count"] as? Int == 11)
        #expect(histogram("baton_job_run_seconds")?["count"] as? Int == 11)
        #expect(histogram("baton_job_wait_seconds")?["p95"] is NSNumber, "quantiles are estimated from the buckets")
        let batches = try #require(histograms.first { $0["name"] as? String == "baton_commit_batch_size" })
        #expect((batches["count"] as? Int ?? 0) >= 1)

        let text = try #require(try client.request(["op": "metrics"]).string("text"))
        #expect(text.contains("baton_jobs_completed_total{queue=\"flow\"} 7"), "\(text)")
        #expect(text.contains("# TYPE baton_job_run_seconds histogram"))
    }

    @Test("health turns degraded while a ready job waits past its threshold, and ok once it is claimed")
    func healthFollowsTheOldestReadyJob() throws {
        let server = try TestServer(arguments: ["--health-max-ready-age-ms", "300"])
        let client = try server.connect()
        let healthy = try client.request(["op": "health"])
        #expect(healthy.string("health") == "ok", "\(healthy)")
        if !TestStore.current.isPostgres {
            // The disk beside a SQLite store; PostgreSQL's disk is the database's to watch.
            #expect(healthy.int("free_bytes").map { $0 > 0 } == true)
        }
        let job = try client.enqueue(queue: "slow", payload: 1)
        var degraded = try client.request(["op": "health"])
        _ = try waitUntil {
            degraded = try client.request(["op": "health"])
            return degraded.string("health") == "degraded"
        }
        #expect(degraded.string("health") == "degraded", "\(degraded)")
        let reasons = degraded.fields["reasons"] as? [String] ?? []
        #expect(reasons.contains { $0.hasPrefix("job \(job) in slow has been ready for") }, "names the job and its queue: \(reasons)")
        #expect((degraded.int("oldest_ready_age_ms") ?? 0) >= 300)
        _ = try #require(try client.claim(queues: ["slow"]))
        let recovered = try client.request(["op": "health"])
        #expect(recovered.string("health") == "ok", "\(recovered)")
        #expect(recovered.int("running") == 1)
    }

    @Test("a fail for a job cancelled under its lease is refused and counted as a late outcome")
    func lateOutcomesAreCounted() throws {
        let server = try TestServer()
        let client = try server.connect()
        let job = try client.enqueue(queue: "q", payload: 1)
        let lease = try #require(try client.claim(queues: ["q"]))
        _ = try client.request(["op": "cancel", "job": job])
        #expect(try client.fenced("fail", lease, ["error": "too late"]).errorCode == "invalid_transition")
        let samples = try #require(try client.request(["op": "metrics", "format": "json"]).fields["samples"] as? [[String: Any]])
        #expect(samples.first { $0["name"] as? String == "baton_late_outcomes_total" }?["value"] as? Double == 1)
    }

    @Test("health names the job running too long and its queue")
    func healthNamesALongRunningJob() throws {
        let server = try TestServer(arguments: ["--health-max-running-ms", "200"])
        let client = try server.connect()
        let job = try client.enqueue(queue: "render", payload: 1)
        _ = try #require(try client.claim(queues: ["render"]))
        var report = try client.request(["op": "health"])
        _ = try waitUntil {
            report = try client.request(["op": "health"])
            return report.string("health") == "degraded"
        }
        let reasons = report.fields["reasons"] as? [String] ?? []
        #expect(reasons.contains { $0.hasPrefix("job \(job) in render running longer than 200 ms") }, "\(reasons)")
        #expect(report.fields["long_running_jobs"] as? [Int] == [job])
    }

    @Test("workers lists a connected claimer with its pid and name, and drops it when it disconnects")
    func workersComeAndGo() throws {
        let server = try TestServer()
        let observer = try server.connect()
        let job = try observer.enqueue(queue: "w", payload: 1)
        var worker: JSONLineClient? = try server.connect()
        let lease = try #require(try worker?.claim(queues: ["w"], ["worker": "embedder-7"]))
        #expect(try worker?.fenced("heartbeat", lease).ok == true)

        let listed = try #require(try observer.request(["op": "workers"]).fields["workers"] as? [[String: Any]])
        #expect(listed.count == 1, "a client that only reads is not a worker: \(listed)")
        let entry = try #require(listed.first)
        #expect(entry["pid"] as? Int == Int(getpid()))
        #expect(entry["worker"] as? String == "embedder-7")
        #expect(entry["jobs"] as? [Int] == [job])
        #expect(entry["last_heartbeat_at"] as? Int != nil)

        worker = nil  // closes the connection
        var remaining = listed
        let gone = try waitUntil {
            remaining = try observer.request(["op": "workers"]).fields["workers"] as? [[String: Any]] ?? []
            return remaining.isEmpty
        }
        #expect(gone, "a vanished worker is gone from the list: \(remaining)")
    }

    @Test("--log-format json logs each state change once, with the same keys")
    func jsonLogs() throws {
        let server = try TestServer(arguments: ["--log-format", "json"])
        let client = try server.connect()
        let id = try client.enqueue(queue: "logged", payload: 1)
        let lease = try #require(try client.claim(queues: ["logged"], ["worker": "w"]))
        #expect(try client.fenced("complete", lease).ok)
        #expect(server.stop() == 0)
        let entries = server.log.split(separator: "\n").compactMap { line in
            try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        }
        #expect(!entries.isEmpty, "every line is a JSON object: \(server.log)")
        let changes = entries.filter { ($0["job.id"] as? String) == "\(id)" }
        #expect(changes.map { $0["message"] as? String ?? "" } == ["job enqueued", "job claimed", "job completed"], "\(changes)")
        #expect(changes.allSatisfy { $0["level"] as? String == "info" && $0["job.queue"] as? String == "logged" })
        #expect(changes[1]["lease.token"] as? String == "\(lease.token)")
        #expect(changes[1]["peer.pid"] as? String == "\(getpid())")
    }
}
