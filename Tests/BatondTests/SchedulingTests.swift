import BatonTestSupport
import Foundation
import Testing

@Suite("Ordering, delays and long-poll")
struct SchedulingTests {
    @Test("higher priority first, then oldest first, across the queues a claim names")
    func priorityThenAge() throws {
        let server = try TestServer()
        let client = try server.connect()
        let low = try client.enqueue(queue: "a", payload: "low", ["priority": 0])
        let urgentA = try client.enqueue(queue: "a", payload: "urgent-a", ["priority": 5])
        let urgentB = try client.enqueue(queue: "b", payload: "urgent-b", ["priority": 5])
        let middle = try client.enqueue(queue: "b", payload: "middle", ["priority": 2])
        _ = try client.enqueue(queue: "elsewhere", payload: "not asked for", ["priority": 9])

        var order: [Int] = []
        while let job = try client.claim(queues: ["a", "b"]) {
            order.append(job.id)
        }
        #expect(order == [urgentA, urgentB, middle, low])
    }

    @Test("a delayed job is not claimable before its time")
    func notBeforeItsTime() throws {
        let server = try TestServer()
        let client = try server.connect()
        let before = Int(Date().timeIntervalSince1970 * 1000)
        let id = try client.enqueue(payload: "later", ["delay_ms": 60_000])
        #expect(try client.claim() == nil)
        let runAt = try #require(try client.get(id)["run_at"] as? Int)
        #expect(runAt >= before + 60_000)
    }

    @Test("a waiting claim gets a delayed job once its time comes")
    func waitingClaimGetsDelayedJob() throws {
        let server = try TestServer()
        let client = try server.connect()
        let started = Date()
        let id = try client.enqueue(payload: "soon", ["delay_ms": 500])
        let job = try #require(try client.claim(queues: ["default"], ["wait_ms": 20_000]))
        #expect(job.id == id)
        #expect(Date().timeIntervalSince(started) >= 0.49)
    }

    @Test("run_at in the past makes a job ready at once")
    func runAtInThePast() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(payload: 1, ["run_at": 1_000])
        #expect(try client.claim()?.id == id)
    }

    @Test("a parked claim is woken by an enqueue on another connection")
    func longPollWakeUp() throws {
        let server = try TestServer()
        let worker = try server.connect()
        let producer = try server.connect()
        try worker.send(["op": "claim", "id": "parked", "queues": ["wake"], "wait_ms": 60_000])
        // Once the claim is parked, the producer's enqueue must wake it.
        try producer.waitForParkedClaims(1)
        let id = try producer.enqueue(queue: "wake", payload: "now")
        let reply = try worker.readReply()
        #expect(reply.string("id") == "parked")
        #expect(reply.object("job")?["id"] as? Int == id)
    }

    @Test("a parked claim answers job null when its wait ends")
    func longPollTimeout() throws {
        let server = try TestServer()
        let client = try server.connect()
        let started = Date()
        let reply = try client.request(["op": "claim", "queues": ["empty"], "wait_ms": 300])
        #expect(reply.ok)
        #expect(reply.isNull("job"))
        #expect(Date().timeIntervalSince(started) >= 0.29)
    }

    @Test("a job handed to a parked claim whose client hung up goes back, its attempt unspent")
    func abandonedParkedClaim() throws {
        let server = try TestServer()
        do {
            let gone = try server.connect()
            try gone.send(["op": "claim", "queues": ["q"], "wait_ms": 60_000])
            usleep(100_000)
        }
        let client = try server.connect()
        let id = try client.enqueue(queue: "q", payload: 1)
        // Whether the server noticed the hang-up before the enqueue or after, the job
        // reaches the live client, on its first attempt.
        let job = try #require(try client.claim(queues: ["q"], ["wait_ms": 20_000]))
        #expect(job.id == id)
        #expect(job.attempt == 1)
    }

    @Test("stats counts jobs by state per queue")
    func stats() throws {
        let server = try TestServer()
        let client = try server.connect()
        for index in 0..<3 { _ = try client.enqueue(queue: "s", payload: index) }
        let claimed = try #require(try client.claim(queues: ["s"]))
        #expect(try client.fenced("complete", claimed).ok)
        _ = try client.claim(queues: ["s"])
        let stats = try client.request(["op": "stats"])
        let queue = try #require(stats.object("queues")?["s"] as? [String: Any])
        #expect(queue["queued"] as? Int == 1)
        #expect(queue["running"] as? Int == 1)
        #expect(queue["completed"] as? Int == 1)
        #expect(queue["oldest_ready_age_ms"] as? Int != nil)
        #expect(stats.int("leases") == 1)
    }
}
