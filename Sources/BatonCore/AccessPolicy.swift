/// Who may do what, on which queues: the grants of an access policy, and the one decision
/// every request goes through when batond runs with one.
///
/// Everything here is resolved to numeric ids before it is used: a user name becomes its
/// uid and a group its gid and member uids, when the policy file is read (see
/// `AccessPolicy+File` in BatonServer). The decision itself is pure, and costs one pass over
/// the grants, which a policy file bounds; it never grows with jobs or queues.
public struct AccessPolicy: Hashable, Sendable {
    /// What a grant allows.
    public enum Role: String, CaseIterable, Hashable, Sendable {
        /// `enqueue`, `enqueue_batch`, and the follow-ups of a `complete`.
        case produce
        /// `claim`; the fenced ops are further held to the lease's own uid.
        case work
        /// `get`, `list`, `stats`, `events`, `metrics`, `health`, `workers`.
        case read
        /// `cancel`, `pause`, `resume`, `retry`, queue settings, and any op added later.
        case admin
    }

    /// The processes a grant is for.
    public enum Principal: Hashable, Sendable {
        /// A process running as this uid.
        case user(uid: UInt32)
        /// A process whose gid is this one, or whose uid is one of the group's members (its
        /// listed members and the users whose primary group it is, when the policy was read).
        case group(gid: UInt32, members: Set<UInt32>)

        func includes(_ peer: PeerIdentity) -> Bool {
            switch self {
            case .user(let uid): peer.uid == uid
            case .group(let gid, let members): peer.gid == gid || members.contains(peer.uid)
            }
        }
    }

    /// Roles for a principal on the queues its patterns match.
    public struct Grant: Hashable, Sendable {
        public var principal: Principal
        public var queues: [QueuePattern]
        public var roles: Set<Role>

        public init(principal: Principal, queues: [QueuePattern], roles: Set<Role>) {
            self.principal = principal
            self.queues = queues
            self.roles = roles
        }
    }

    public var grants: [Grant]

    public init(grants: [Grant]) {
        self.grants = grants
    }

    /// Whether `peer` holds `role` on `queue`; with `queue` `nil`, on every queue (what an op
    /// over the whole server needs, such as `stats`).
    ///
    /// A connection whose peer is unknown holds nothing.
    public func allows(_ role: Role, on queue: String?, for peer: PeerIdentity?) -> Bool {
        guard let peer else { return false }
        return self.grants.contains { grant in
            guard grant.roles.contains(role), grant.principal.includes(peer) else { return false }
            if let queue {
                return grant.queues.contains { $0.matches(queue) }
            }
            return grant.queues.contains { $0.matchesEveryQueue }
        }
    }
}

/// A queue name, or a pattern where `*` stands for any run of characters (none included):
/// `parse-*` matches `parse-pdf` and `parse-`, `*` matches every queue.
public struct QueuePattern: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    private let parts: [Substring]

    public init(_ text: String) {
        self.text = text
        self.parts = text.split(separator: "*", omittingEmptySubsequences: false)
    }

    public var description: String { self.text }

    /// A pattern of stars alone matches whatever queue there is, or will be.
    public var matchesEveryQueue: Bool { self.parts.allSatisfy(\.isEmpty) }

    /// Whether the whole of `queue` matches: the literal parts in order, the first at the
    /// start and the last at the end, stars taking whatever lies between.
    public func matches(_ queue: String) -> Bool {
        guard self.parts.count > 1 else { return queue == self.text }
        var rest = Substring(queue)
        guard rest.hasPrefix(self.parts[0]) else { return false }
        rest = rest.dropFirst(self.parts[0].count)
        let last = self.parts[self.parts.count - 1]
        for part in self.parts.dropFirst().dropLast() where !part.isEmpty {
            // The earliest match leaves the most room for what follows: greedy is exact here.
            guard let found = rest.firstRange(of: part) else { return false }
            rest = rest[found.upperBound...]
        }
        return rest.count >= last.count && rest.hasSuffix(last)
    }
}
