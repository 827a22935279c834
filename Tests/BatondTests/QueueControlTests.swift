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
}
