import BatonTestSupport
import Foundation
import Testing

@Suite("Pausing queues and listing jobs")
struct QueueControlTests {
    @Test("a paused queue gives no jobs, its running jobs finish, and the pause survives a restart")
    func pauseQueue() throws {
        let server = try TestServer()
        let client = try server.connect()
        _ = try client.enqueue(queue: "llm", payload: 1)
        let running = try #require(try client.claim(queues: ["llm"]))
        let waiting = try client.enqueue(queue: "llm", payload: 2)
        #expect(try client.request(["op": "pause_queue", "queue": "llm"]).bool("paused") == true)
        #expect(try client.claim(queues: ["llm"]) == nil)
        #expect(try client.fenced("complete", running).ok, "a running job finishes normally")
        #expect(try client.request(["op": "stats"]).fields["paused_queues"] as? [String] == ["llm"])

        try server.restart()
        let after = try server.connect()
        #expect(try after.claim(queues: ["llm"]) == nil, "still paused after the restart")
        // A claim waiting on the paused queue is served the moment it resumes.
        try after.send(["op": "claim", "id": "w", "queues": ["llm"], "wait_ms": 20_000])
        let other = try server.connect()
        try other.waitForParkedClaims(1)
        #expect(try other.request(["op": "resume_queue", "queue": "llm"]).bool("paused") == false)
        #expect(try after.readReply().object("job")?["id"] as? Int == waiting)
    }

    @Test("list pages through jobs with a cursor, filtered by queue and state")
    func list() throws {
        let server = try TestServer()
        let client = try server.connect()
        var ids: [Int] = []
        for index in 0..<5 { ids.append(try client.enqueue(queue: "l", payload: index)) }
        _ = try client.enqueue(queue: "other", payload: 9)
        let claimed = try #require(try client.claim(queues: ["l"]))

        let first = try client.request(["op": "list", "queue": "l", "limit": 2])
        let firstPage = try #require(first.fields["jobs"] as? [[String: Any]])
        #expect(firstPage.compactMap { $0["id"] as? Int } == [ids[4], ids[3]])
        let cursor = try #require(first.int("next"))
        let second = try client.request(["op": "list", "queue": "l", "limit": 2, "after": cursor])
        #expect((second.fields["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? Int } == [ids[2], ids[1]])

        let oldest = try client.request(["op": "list", "queue": "l", "order": "oldest", "limit": 10])
        #expect((oldest.fields["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? Int } == ids)
        #expect(oldest.isNull("next"))

        let runningOnly = try client.request(["op": "list", "state": "running"])
        let runningJobs = try #require(runningOnly.fields["jobs"] as? [[String: Any]])
        #expect(runningJobs.compactMap { $0["id"] as? Int } == [claimed.id])
        #expect((runningJobs.first?["lease"] as? [String: Any])?["peer_pid"] as? Int == Int(getpid()))
        #expect(try client.request(["op": "list", "state": "sleeping"]).errorCode == "invalid_argument")
    }

    @Test("list filters by text in the last error, reading at most 10,000 jobs a page and saying where to go on")
    func listByError() throws {
        let server = try TestServer()
        let client = try server.connect()
        func enqueue(_ count: Int, queue: String) throws {
            for start in stride(from: 0, to: count, by: 1_000) {
                let jobs = (start..<min(start + 1_000, count)).map { ["queue": queue, "payload": $0] as [String: Any] }
                #expect(try client.request(["op": "enqueue_batch", "jobs": jobs]).ok)
            }
        }
        func cancelAll(_ queue: String, reason: String) throws {
            #expect(try client.request(["op": "cancel", "queue": queue, "state": "queued", "reason": reason]).ok)
        }
        try enqueue(3, queue: "early")
        try cancelAll("early", reason: "quota exceeded for tenant 7")
        try enqueue(10_050, queue: "plain")
        try enqueue(1, queue: "late")
        try cancelAll("late", reason: "quota exceeded again")

        func page(after: Int?) throws -> (ids: [Int], next: Int?) {
            var request: [String: Any] = ["op": "list", "error_contains": "quota exceeded", "limit": 10]
            if let after { request["after"] = after }
            let reply = try client.request(request)
            let jobs = try #require(reply.fields["jobs"] as? [[String: Any]])
            #expect(jobs.allSatisfy { ($0["last_error"] as? String)?.contains("quota exceeded") == true })
            return (jobs.compactMap { $0["id"] as? Int }, reply.int("next"))
        }
        // The newest 10,000 jobs hold one match: the page is short, and says where to go on.
        let first = try page(after: nil)
        #expect(first.ids.count == 1)
        let next = try #require(first.next)
        let second = try page(after: next)
        #expect(second.ids == [3, 2, 1])
        #expect(second.next == nil)
        #expect(try client.request(["op": "list", "error_contains": ""]).errorCode == "invalid_argument")
    }
}
