import BatonTestSupport
import Foundation
import Testing

@Suite("Recurring jobs")
struct RecurringJobTests {
    /// The slots of the jobs a schedule enqueued into `queue`, from their unique keys, oldest first.
    private func slots(in queue: String, _ client: JSONLineClient) throws -> [Int] {
        let jobs = try #require(try client.request(["op": "list", "queue": queue, "limit": 1_000, "order": "oldest"]).fields["jobs"] as? [[String: Any]])
        return try jobs.map { job in
            let key = try #require(job["unique_key"] as? String)
            return try #require(Int(key.split(separator: "@").last ?? ""))
        }
    }

    /// Polls until `condition` holds, for up to 15 s.
    private func eventually(_ condition: () throws -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }

    @Test("an every_ms schedule fires once per slot, and never a slot twice across a restart")
    func everyAcrossARestart() throws {
        let server = try TestServer()
        var client = try server.connect()
        let made = try client.request(["op": "schedule", "name": "tick", "queue": "tick", "payload": ["report": "daily"], "every_ms": 300])
        #expect(made.ok && made.int("next_at") != nil, "\(made)")
        #expect(try self.eventually { try self.slots(in: "tick", client).count >= 3 })
        try server.restart()
        client = try server.connect()
        let before = try self.slots(in: "tick", client).count
        #expect(try self.eventually { try self.slots(in: "tick", client).count >= before + 3 })

        let slots = try self.slots(in: "tick", client)
        #expect(Set(slots).count == slots.count, "a slot fired twice: \(slots)")
        #expect(slots == slots.sorted() && slots.allSatisfy { ($0 - slots[0]) % 300 == 0 }, "\(slots)")
        let listed = try #require((try client.request(["op": "schedules"]).fields["schedules"] as? [[String: Any]])?.first)
        #expect(listed["name"] as? String == "tick" && listed["every_ms"] as? Int == 300 && (listed["next_at"] as? Int ?? 0) > slots.last!)
        #expect(try client.request(["op": "unschedule", "name": "tick"]).bool("removed") == true)
        #expect(try client.request(["op": "unschedule", "name": "tick"]).bool("removed") == false)
    }

    @Test("overlap skip enqueues nothing while the previous job is unfinished")
    func overlapSkip() throws {
        let server = try TestServer()
        let client = try server.connect()
        #expect(try client.request(["op": "schedule", "name": "sync", "queue": "sync", "payload": 1, "every_ms": 200, "overlap": "skip"]).ok)
        #expect(try self.eventually { try self.slots(in: "sync", client).count == 1 })
        let first = try #require(try client.request(["op": "schedules"]).fields["schedules"] as? [[String: Any]]).first?["next_at"] as? Int
        // Three slots pass while the job waits unclaimed: each is skipped.
        #expect(try self.eventually {
            let next = (try client.request(["op": "schedules"]).fields["schedules"] as? [[String: Any]])?.first?["next_at"] as? Int
            return (next ?? 0) >= (first ?? .max) + 600
        })
        #expect(try self.slots(in: "sync", client).count == 1)
        let job = try #require(try client.claim(queues: ["sync"]))
        #expect(try client.fenced("complete", job).ok)
        #expect(try self.eventually { try self.slots(in: "sync", client).count == 2 }, "the next slot fires once the job is done")
    }

    @Test("a cron schedule's next slot is on the minute in its time zone; bad rules are refused")
    func cronAndRefusals() throws {
        let server = try TestServer()
        let client = try server.connect()
        let made = try client.request([
            "op": "schedule", "name": "nightly", "queue": "reports", "payload": NSNull(), "cron": "30 2 * * *", "timezone": "Asia/Kolkata",
        ])
        let next = try #require(made.int("next_at"), "\(made)")
        // 02:30 in Kolkata (UTC+5:30) is 21:00 UTC.
        #expect(next % 86_400_000 == 21 * 3_600_000)
        #expect(next > Int(Date().timeIntervalSince1970 * 1000))
        for bad: [String: Any] in [
            ["cron": "61 * * * *"], ["cron": "* * * *"], ["cron": "0 * * * *", "timezone": "Mars/Olympus"], ["every_ms": 1_000, "cron": "* * * * *"],
            ["every_ms": 1_000, "timezone": "UTC"], ["every_ms": 1_000, "overlap": "queue"], [:],
        ] {
            var request: [String: Any] = ["op": "schedule", "name": "bad", "queue": "q", "payload": 1]
            request.merge(bad) { $1 }
            #expect(try client.request(request).errorCode == "invalid_argument", "\(bad)")
        }
    }
}
