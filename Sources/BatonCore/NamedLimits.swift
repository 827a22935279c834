import DequeModule
import HeapModule

/// A named limit's settings (`set_limit`): how many of the jobs naming it may run at once,
/// and how many may start in a span of time. Either may be unset.
public struct LimitSettings: Hashable, Sendable {
    /// At most `count` starts in any `perMilliseconds` span: a sliding window, exact.
    public struct Rate: Hashable, Sendable {
        public var count: Int
        public var perMilliseconds: Int64

        public init(count: Int, perMilliseconds: Int64) {
            self.count = count
            self.perMilliseconds = perMilliseconds
        }
    }

    public var maxRunning: Int?
    public var rate: Rate?

    public init(maxRunning: Int? = nil, rate: Rate? = nil) {
        self.maxRunning = maxRunning
        self.rate = rate
    }

    public var isEmpty: Bool { self.maxRunning == nil && self.rate == nil }

    /// A change to some of the settings: a field left `nil` stays, one set to `.some(nil)` is removed.
    public struct Change: Hashable, Sendable {
        public var maxRunning: Int??
        public var rate: Rate??

        public init(maxRunning: Int?? = nil, rate: Rate?? = nil) {
            self.maxRunning = maxRunning
            self.rate = rate
        }

        public var isEmpty: Bool { self.maxRunning == nil && self.rate == nil }
    }

    /// These settings with `change` applied.
    public func applying(_ change: Change) -> LimitSettings {
        var settings = self
        if let maxRunning = change.maxRunning { settings.maxRunning = maxRunning }
        if let rate = change.rate { settings.rate = rate }
        return settings
    }

    /// Whether `name` is a template (`tenant:*`), which sets the limit of every name that
    /// starts with its prefix (`tenant:42`) and has no limit of its own.
    public static func isTemplate(_ name: String) -> Bool {
        name.utf8.count > 2 && name.hasSuffix(":*")
    }
}

/// The named limits shared across queues (`limits: ["openai", "tenant:42"]` on a job) and
/// the admission rule they make: a claim starts a job only if every limit it names admits
/// it, and a job held back waits, never failed.
///
/// - `max_running`: fewer than that many jobs naming the limit are running.
/// - `rate`: fewer than `count` of them started in the last `per_ms` (a sliding window of
///   start times, so no span of `per_ms` ever holds more than `count` starts).
///
/// A name ending in `:*` is a template: `tenant:*` limits `tenant:42` and `tenant:7` each
/// on its own, by the longest template whose prefix (up to and including a `:`) the name
/// starts with, unless the name has settings of its own.
///
/// Kept by the single writer beside its running jobs, on the lease clock (which stands
/// still while the authority is stalled). Every name a running job uses is counted, set or
/// not, so a limit set later sees what already runs. State exists only for names in use:
/// a name is forgotten once none of its jobs runs and its window is empty. Holding a claim
/// back records the queue, so that the queue is offered to parked claims again when the
/// limit frees a slot: at once when a job ends, on ``nextWakeup`` when a window opens.
public struct NamedLimits: Sendable {
    public static let maximumPerJob = 4

    /// Settings by name, templates (`tenant:*`) included.
    public private(set) var settings: [String: LimitSettings] = [:]
    /// The templates' prefixes (`tenant:`), for the lookups of names with a `:`.
    private var templatePrefixes: Set<String> = []
    private var usage: [String: Usage] = [:]
    private var wakeups = Heap<Wakeup>()

    private struct Usage: Sendable {
        var running = 0
        /// Start times within the window, oldest first; kept only while a rate applies.
        var starts: Deque<Int64> = []
        /// Queues whose claims passed over a job this limit held back.
        var held: Set<String> = []
        /// When this name's earliest pending wakeup is due.
        var wakeAt: Int64?

        var isIdle: Bool { self.running == 0 && self.starts.isEmpty && self.held.isEmpty }
    }

    private struct Wakeup: Comparable, Sendable {
        var at: Int64
        var name: String

        static func < (lhs: Wakeup, rhs: Wakeup) -> Bool { (lhs.at, lhs.name) < (rhs.at, rhs.name) }
    }

    public init() {}

    // MARK: Settings

    /// The settings that apply to `name`: its own, else its longest template's. Bounded by
    /// the name's length, however many templates there are.
    public func rule(for name: String) -> (rule: String, settings: LimitSettings)? {
        if let own = self.settings[name] { return (name, own) }
        guard !self.templatePrefixes.isEmpty else { return nil }
        var best: String?
        var index = name.startIndex
        while let colon = name[index...].firstIndex(of: ":") {
            let prefix = String(name[...colon])
            if self.templatePrefixes.contains(prefix) { best = prefix }
            index = name.index(after: colon)
        }
        guard let best else { return nil }
        let template = best + "*"
        return self.settings[template].map { (template, $0) }
    }

    /// Sets (or, empty, removes) a limit's settings.
    ///
    /// - Parameter freed: receives every queue a limit held back: a change may let them start.
    public mutating func set(_ name: String, to settings: LimitSettings, freeing freed: inout Set<String>) {
        if settings.isEmpty {
            self.settings.removeValue(forKey: name)
        } else {
            self.settings[name] = settings
        }
        if LimitSettings.isTemplate(name) {
            let prefix = String(name.dropLast())
            if settings.isEmpty { self.templatePrefixes.remove(prefix) } else { self.templatePrefixes.insert(prefix) }
        }
        for name in Array(self.usage.keys) {
            let rated = self.rule(for: name)?.settings.rate != nil
            self.usage.modifyValue(forKey: name) { usage in
                freed.formUnion(usage.held)
                usage.held.removeAll()
                if !rated { usage.starts.removeAll() }
            }
            self.forgetIfIdle(name)
        }
    }

    // MARK: Admission

    /// Whether every limit in `names` lets a job start at lease time `now`. A limit that
    /// holds it back records `queue`, to offer it again when the limit frees a slot.
    public mutating func admits(_ names: [String], queue: String, now: Int64) -> Bool {
        for name in names {
            guard let (_, settings) = self.rule(for: name) else { continue }
            if let max = settings.maxRunning, self.usage[name]?.running ?? 0 >= max {
                self.hold(queue, at: name, wakeAt: nil)
                return false
            }
            if let rate = settings.rate {
                var opensAt: Int64?
                self.usage.modifyValue(forKey: name) { usage in
                    while let first = usage.starts.first, first <= now - rate.perMilliseconds { usage.starts.removeFirst() }
                    if usage.starts.count >= rate.count { opensAt = usage.starts.first! + rate.perMilliseconds }
                }
                if let opensAt {
                    self.hold(queue, at: name, wakeAt: opensAt)
                    return false
                }
            }
        }
        return true
    }

    /// A job naming `names` started at lease time `now` (after ``admits(_:queue:now:)``, or
    /// when a restart finds it running).
    public mutating func started(_ names: [String], now: Int64) {
        for name in names {
            let rate = self.rule(for: name)?.settings.rate
            self.usage[name, default: Usage()].running += 1
            guard let rate else { continue }
            self.usage.modifyValue(forKey: name) { usage in
                usage.starts.append(now)
                while usage.starts.count > rate.count { usage.starts.removeFirst() }
            }
        }
    }

    /// A job naming `names` stopped running, however it ended.
    ///
    /// - Parameter freed: receives the queues its limits held back.
    public mutating func ended(_ names: [String], freeing freed: inout Set<String>) {
        for name in names {
            let rate = self.rule(for: name)?.settings.rate
            var sweepAt: Int64?
            self.usage.modifyValue(forKey: name) { usage in
                usage.running = max(usage.running - 1, 0)
                freed.formUnion(usage.held)
                usage.held.removeAll()
                if usage.running == 0, let last = usage.starts.last, let rate {
                    sweepAt = last + rate.perMilliseconds
                }
            }
            if let sweepAt { self.schedule(name, at: sweepAt) }
            self.forgetIfIdle(name)
        }
    }

    /// When the earliest held-back window may open, or an idle name's window empties.
    public var nextWakeup: Int64? { self.wakeups.min?.at }

    /// Offers again the queues held back by windows that have opened by `now`, and forgets
    /// names no longer in use.
    public mutating func wake(now: Int64, freeing freed: inout Set<String>) {
        while let wakeup = self.wakeups.min, wakeup.at <= now {
            self.wakeups.removeMin()
            guard self.usage[wakeup.name]?.wakeAt == wakeup.at else { continue }  // superseded
            let rate = self.rule(for: wakeup.name)?.settings.rate
            var next: Int64?
            self.usage.modifyValue(forKey: wakeup.name) { usage in
                usage.wakeAt = nil
                guard let rate else {
                    usage.starts.removeAll()
                    freed.formUnion(usage.held)
                    usage.held.removeAll()
                    return
                }
                while let first = usage.starts.first, first <= now - rate.perMilliseconds { usage.starts.removeFirst() }
                if usage.starts.count < rate.count {
                    freed.formUnion(usage.held)
                    usage.held.removeAll()
                } else {
                    next = usage.starts.first! + rate.perMilliseconds
                }
                if next == nil, usage.running == 0, let last = usage.starts.last {
                    next = last + rate.perMilliseconds
                }
            }
            if let next { self.schedule(wakeup.name, at: next) }
            self.forgetIfIdle(wakeup.name)
        }
    }

    // MARK: What they show

    /// One limit's use, for `limits`, `stats` and the metrics.
    public struct Use: Hashable, Sendable {
        public var name: String
        /// The setting it runs under (its own name, or a template's); `nil` when unset.
        public var rule: String?
        public var settings: LimitSettings?
        public var running: Int
        /// Starts within the rate window, as of the last look.
        public var recentStarts: Int
        /// Whether a claim was held back by it since it last freed a slot.
        public var holding: Bool
    }

    /// Each limit with settings, and each name in use, by name.
    public var uses: [Use] {
        var names = Set(self.usage.keys)
        names.formUnion(self.settings.keys)
        return names.sorted().map { name in
            let usage = self.usage[name]
            let rule = self.rule(for: name)
            return Use(
                name: name, rule: rule?.rule, settings: rule?.settings, running: usage?.running ?? 0,
                recentStarts: usage?.starts.count ?? 0, holding: !(usage?.held.isEmpty ?? true)
            )
        }
    }

    /// How many jobs naming `name` run.
    public func running(_ name: String) -> Int { self.usage[name]?.running ?? 0 }

    // MARK: Bookkeeping

    private mutating func hold(_ queue: String, at name: String, wakeAt: Int64?) {
        if self.usage[name] == nil { self.usage[name] = Usage() }
        self.usage.modifyValue(forKey: name) { $0.held.insert(queue) }
        if let wakeAt { self.schedule(name, at: wakeAt) }
    }

    private mutating func schedule(_ name: String, at time: Int64) {
        var scheduled = false
        self.usage.modifyValue(forKey: name) { usage in
            guard usage.wakeAt.map({ time < $0 }) ?? true else { return }
            usage.wakeAt = time
            scheduled = true
        }
        if scheduled { self.wakeups.insert(Wakeup(at: time, name: name)) }
    }

    private mutating func forgetIfIdle(_ name: String) {
        if let usage = self.usage[name], usage.isIdle, usage.wakeAt == nil { self.usage.removeValue(forKey: name) }
    }
}
