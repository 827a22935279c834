import BatonCore
import Testing

@Suite("Access policy decisions")
struct AccessPolicyTests {
    @Test("queue patterns match whole names, a star standing for any run of characters")
    func patterns() {
        let cases: [(String, String, Bool)] = [
            ("emails", "emails", true), ("emails", "emails2", false), ("emails", "email", false),
            ("parse-*", "parse-pdf", true), ("parse-*", "parse-", true), ("parse-*", "parse", false),
            ("*-high", "embed-high", true), ("*-high", "embed-high-x", false),
            ("a*b*c", "abc", true), ("a*b*c", "axxbyyc", true), ("a*b*c", "acb", false),
            ("a*a", "a", false), ("a*a", "aa", true), ("*", "", true), ("*", "anything at all", true),
        ]
        for (pattern, queue, expected) in cases {
            #expect(QueuePattern(pattern).matches(queue) == expected, "\(pattern) ~ \(queue)")
        }
        #expect(QueuePattern("*").matchesEveryQueue && QueuePattern("**").matchesEveryQueue)
        #expect(!QueuePattern("q*").matchesEveryQueue && !QueuePattern("q").matchesEveryQueue)
    }

    let policy = AccessPolicy(grants: [
        .init(principal: .group(gid: 500, members: [1002]), queues: [QueuePattern("emails"), QueuePattern("parse-*")], roles: [.produce, .read]),
        .init(principal: .user(uid: 1001), queues: [QueuePattern("embed")], roles: [.work]),
        .init(principal: .user(uid: 0), queues: [QueuePattern("*")], roles: Set(AccessPolicy.Role.allCases)),
    ])

    @Test("a role is granted by user, by group id or by group membership, on the queues its patterns match")
    func grants() {
        let embedder = PeerIdentity(pid: 1, uid: 1001, gid: 1001)
        #expect(self.policy.allows(.work, on: "embed", for: embedder))
        #expect(!self.policy.allows(.work, on: "emails", for: embedder))
        #expect(!self.policy.allows(.produce, on: "embed", for: embedder))
        // By the process's group, and by membership though the process runs under another gid.
        let webapp = PeerIdentity(pid: 2, uid: 1500, gid: 500)
        let member = PeerIdentity(pid: 3, uid: 1002, gid: 1002)
        for peer in [webapp, member] {
            #expect(self.policy.allows(.produce, on: "parse-pdf", for: peer))
            #expect(self.policy.allows(.read, on: "emails", for: peer))
            #expect(!self.policy.allows(.admin, on: "emails", for: peer))
            #expect(!self.policy.allows(.read, on: nil, for: peer), "a pattern that is not * does not cover the server")
        }
        let root = PeerIdentity(pid: 4, uid: 0, gid: 0)
        #expect(self.policy.allows(.admin, on: "whatever", for: root))
        #expect(self.policy.allows(.read, on: nil, for: root))
        #expect(!self.policy.allows(.read, on: "emails", for: nil), "an unidentified peer holds nothing")
        #expect(!AccessPolicy(grants: []).allows(.read, on: "q", for: root))
    }
}
