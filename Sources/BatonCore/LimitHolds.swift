import HeapModule

/// The queues a host's claims found held back by named limits, where the limits' use lives
/// in a store many hosts share: the claim decides under the database's row locks and
/// forgets, but the host must still offer those queues to its parked claims again when a
/// limit may admit. That is when a job naming the limit stops running (on any host, as
/// announced), when its window opens or its breaker's cooldown ends (``nextWakeup``), or
/// when its settings change. A hold lasts until one of those, so holds are bounded by the
/// limits that hold jobs back now; ``removeAll()`` when announcements may have been lost.
public struct LimitHolds: Sendable {
    /// A limit that held claims back: the queues passed over, and when it may admit again
    /// by the clock alone (`nil`: only when one of its jobs stops running).
    public struct Hold: Hashable, Sendable {
        public var name: String
        public var queues: Set<String>
        public var wakeAt: Int64?

        public init(name: String, queues: Set<String>, wakeAt: Int64?) {
            self.name = name
            self.queues = queues
            self.wakeAt = wakeAt
        }
    }

    private var held: [String: Set<String>] = [:]
    /// Each name's earliest pending wakeup; the heap's entries that no longer match are stale.
    private var wakeAt: [String: Int64] = [:]
    private var wakeups = Heap<Wakeup>()

    private struct Wakeup: Comparable, Sendable {
        var at: Int64
        var name: String

        static func < (lhs: Wakeup, rhs: Wakeup) -> Bool { (lhs.at, lhs.name) < (rhs.at, rhs.name) }
    }

    public init() {}

    public var isEmpty: Bool { self.held.isEmpty }

    /// Whether `name` holds a claim back.
    public func holds(_ name: String) -> Bool { self.held[name] != nil }

    /// When the earliest hold may admit by the clock alone.
    public var nextWakeup: Int64? { self.wakeups.min?.at }

    /// Records `hold`, added to what the name already held.
    public mutating func hold(_ hold: Hold) {
        self.held[hold.name, default: []].formUnion(hold.queues)
        guard let at = hold.wakeAt, self.wakeAt[hold.name].map({ at < $0 }) ?? true else { return }
        self.wakeAt[hold.name] = at
        self.wakeups.insert(Wakeup(at: at, name: hold.name))
    }

    /// A job naming `name` stopped running, or its settings changed: the queues it held.
    /// A template (`tenant:*`) frees every name it governs, which may be any held name
    /// with its prefix.
    public mutating func freed(_ name: String, into queues: inout Set<String>) {
        if LimitSettings.isTemplate(name) {
            let prefix = name.dropLast()
            for held in self.held.keys where held.hasPrefix(prefix) { self.release(held, into: &queues) }
        } else {
            self.release(name, into: &queues)
        }
    }

    /// The queues held by the limits whose wakeups have come by `now`.
    public mutating func wake(now: Int64, into queues: inout Set<String>) {
        while let wakeup = self.wakeups.min, wakeup.at <= now {
            self.wakeups.removeMin()
            guard self.wakeAt[wakeup.name] == wakeup.at else { continue }  // superseded, or freed since
            self.release(wakeup.name, into: &queues)
        }
    }

    /// Forgets every hold: the parked claims look again, and find what still holds them.
    public mutating func removeAll() {
        self.held.removeAll()
        self.wakeAt.removeAll()
        self.wakeups = Heap()
    }

    private mutating func release(_ name: String, into queues: inout Set<String>) {
        if let held = self.held.removeValue(forKey: name) { queues.formUnion(held) }
        self.wakeAt.removeValue(forKey: name)
    }
}
