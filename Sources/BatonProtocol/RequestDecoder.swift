import BatonCore

/// Turns one request line into a validated ``Request``, or into the error to answer it with.
///
/// Everything a client can get wrong is caught here, before the request reaches the
/// authority, so the store only ever sees well-formed operations.
public struct RequestDecoder: Sendable {
    public var limits: ProtocolLimits

    public init(limits: ProtocolLimits = ProtocolLimits()) {
        self.limits = limits
    }

    /// A decoded line: the request, with its `id` as JSON text to echo in the reply.
    public struct Decoded: Sendable {
        public var id: String?
        public var request: Request
    }

    /// A line that cannot be served, with whatever `id` could be read from it.
    public struct Rejection: Error, Sendable {
        public var id: String?
        public var error: BatonError
    }

    /// Every op the server knows, as an unknown op's error lists them.
    public static let ops = [
        "backup", "cancel", "checkpoint", "claim", "complete", "enqueue", "enqueue_batch", "events", "fail", "get",
        "health", "heartbeat", "hello", "limits", "list", "metrics", "pause", "pause_queue", "purge", "release", "resume",
        "resume_queue", "retry", "schedule", "schedules", "set_limit", "set_priority", "set_queue", "stats", "unschedule",
        "workers",
    ]

    /// The fields the server stores as the client wrote them, never reading inside: they are
    /// parsed only to check they are JSON, so their size costs no more than their bytes.
    static let verbatimKeys: Set<String> = ["payload", "result", "state"]

    /// The priorities a job may have: a 32-bit integer, as every client's number type holds.
    static let priorities = Int64(Int32.min)...Int64(Int32.max)

    /// The time limits an attempt may have: a millisecond to a week.
    static let timeouts: ClosedRange<Int64> = 1...604_800_000

    /// Decodes one line (without its newline).
    public func decode(_ line: UnsafeBufferPointer<UInt8>) throws(Rejection) -> Decoded {
        let object: JSONParser.TopLevelObject
        do {
            guard
                let parsed = try JSONParser.parseObject(
                    line, maximumDepth: self.limits.maximumDepth, verbatimKeys: Self.verbatimKeys,
                    maximumValues: self.limits.maximumValues)
            else {
                throw Rejection(id: nil, error: BatonError(.badRequest, "a request must be a JSON object"))
            }
            object = parsed
        } catch let failure as JSONParser.Failure {
            switch failure {
            case .syntax(let message):
                throw Rejection(id: nil, error: BatonError(.badRequest, "not valid JSON: \(message)"))
            case .tooDeep(let limit):
                throw Rejection(id: nil, error: BatonError(.tooLarge, "JSON nested deeper than \(limit) levels"))
            case .tooManyValues(let limit):
                throw Rejection(
                    id: nil,
                    error: BatonError(.tooLarge, "more than \(limit) JSON values outside `payload`, `result` and `state`"))
            }
        } catch {
            throw error as! Rejection
        }

        var fields = Fields(object.fields, limits: self.limits)
        let id = object.fields["id"].map(\.text)
        do {
            if let idValue = object.fields["id"]?.value {
                switch idValue {
                case .string, .integer, .double, .null: break
                default: throw BatonError.invalidArgument("id", "must be a string or a number")
                }
            }
            guard let op = try fields.string("op") else {
                throw BatonError(.badRequest, "a request needs an `op`")
            }
            return Decoded(id: id, request: try self.request(op: op, &fields))
        } catch let error as BatonError {
            throw Rejection(id: id, error: error)
        } catch {
            throw Rejection(id: id, error: BatonError(.internal, "\(error)"))
        }
    }

    private func request(op: String, _ fields: inout Fields) throws -> Request {
        switch op {
        case "hello":
            return .hello(client: try fields.name("client"))
        case "enqueue":
            return .enqueue(try self.enqueue(&fields))
        case "claim":
            return .claim(try self.claim(&fields))
        case "heartbeat":
            return .heartbeat(
                HeartbeatRequest(
                    lease: try fields.leaseReference(),
                    leaseMilliseconds: try fields.leaseDuration(),
                    progress: try fields.progress()
                )
            )
        case "checkpoint":
            return .checkpoint(
                CheckpointRequest(
                    lease: try fields.leaseReference(),
                    state: try fields.requiredJSON("state"),
                    progress: try fields.progress()
                )
            )
        case "complete":
            var next: ClaimRequest?
            if let value = fields.value("claim") {
                guard case .object(let object) = value else {
                    throw BatonError.invalidArgument("claim", "must be an object with `claim`'s arguments")
                }
                var nested = Fields(nested: object, limits: self.limits)
                do {
                    next = try self.claim(&nested)
                } catch let error as BatonError {
                    throw BatonError(error.code, "claim: \(error.message)")
                }
                guard next?.waitMilliseconds == 0 else {
                    throw BatonError.invalidArgument("claim.wait_ms", "is not allowed: the claim made with a completion does not wait")
                }
            }
            return .complete(
                CompleteRequest(
                    lease: try fields.leaseReference(),
                    result: fields.json("result"),
                    followUps: try self.enqueueList("enqueue", in: fields, required: false),
                    next: next
                )
            )
        case "fail":
            let lease = try fields.leaseReference()
            guard let error = try fields.string("error") else {
                throw BatonError.invalidArgument("error", "is required: say why the attempt failed")
            }
            return .fail(
                FailRequest(
                    lease: lease,
                    error: error,
                    retry: try fields.bool("retry") ?? true,
                    retryInMilliseconds: try fields.integer("retry_in_ms", in: 0...Int64(Int32.max))
                )
            )
        case "release":
            return .release(
                ReleaseRequest(
                    lease: try fields.leaseReference(),
                    delayMilliseconds: try fields.integer("delay_ms", in: 0...Int64(Int32.max)) ?? 0
                )
            )
        case "get":
            return .get(jobID: try fields.jobID())
        case "cancel":
            if fields.value("job") == nil, fields.value("queue") != nil {
                return .bulk(try self.bulkChange(.cancel, &fields))
            }
            return .cancel(jobID: try fields.jobID(), reason: try fields.string("reason"))
        case "pause":
            return .pause(jobID: try fields.jobID(), reason: try fields.string("reason"))
        case "resume":
            return .resume(jobID: try fields.jobID(), reason: try fields.string("reason"))
        case "retry":
            if fields.value("job") == nil, fields.value("queue") != nil {
                return .bulk(try self.bulkChange(.retry, &fields))
            }
            return .retry(jobID: try fields.jobID(), reason: try fields.string("reason"))
        case "purge":
            return .bulk(try self.bulkChange(.purge, &fields))
        case "schedule":
            return .schedule(try self.schedule(&fields))
        case "unschedule":
            guard let name = try fields.name("name") else { throw BatonError.invalidArgument("name", "is required: the schedule's name") }
            return .unschedule(name: name)
        case "schedules":
            return .schedules
        case "set_priority":
            let jobID = try fields.jobID()
            guard let priority = try fields.integer("priority", in: Self.priorities) else {
                throw BatonError.invalidArgument("priority", "is required: an integer, higher claimed first")
            }
            return .setPriority(jobID: jobID, priority: priority)
        case "pause_queue", "resume_queue":
            guard let queue = try fields.name("queue") else {
                throw BatonError.invalidArgument("queue", "is required")
            }
            return op == "pause_queue" ? .pauseQueue(queue) : .resumeQueue(queue)
        case "set_queue":
            guard let queue = try fields.name("queue") else {
                throw BatonError.invalidArgument("queue", "is required")
            }
            var change = QueueSettings.Change()
            change.maxRunning = try fields.setting("max_running", in: 1...1_000_000).map { $0.map { Int($0) } }
            change.timeoutMilliseconds = try fields.setting("timeout_ms", in: Self.timeouts)
            change.breaker = try fields.setting("breaker", self.breaker)
            guard !change.isEmpty else {
                throw BatonError.invalidArgument("max_running", "`timeout_ms` or `breaker` is required: the settings to change, each null to remove it")
            }
            return .setQueue(queue: queue, change)
        case "set_limit":
            guard let name = try fields.name("name") else {
                throw BatonError.invalidArgument("name", "is required: the limit's name, or a template such as \"tenant:*\"")
            }
            var change = LimitSettings.Change()
            change.maxRunning = try fields.setting("max_running", in: 1...1_000_000).map { $0.map { Int($0) } }
            change.rate = try fields.setting("rate", self.rate)
            change.breaker = try fields.setting("breaker", self.breaker)
            guard !change.isEmpty else {
                throw BatonError.invalidArgument("max_running", "`rate` or `breaker` is required: the settings to change, each null to remove it")
            }
            return .setLimit(name: name, change)
        case "limits":
            return .limits
        case "events":
            return .events(jobID: try fields.jobID())
        case "metrics":
            let format = try fields.string("format") ?? "prometheus"
            guard format == "prometheus" || format == "json" else {
                throw BatonError.invalidArgument("format", "must be \"prometheus\" or \"json\"")
            }
            return .metrics(json: format == "json")
        case "health":
            return .health
        case "workers":
            return .workers
        case "list":
            let state = try fields.string("state").map { name in
                guard let state = JobState(rawValue: name) else {
                    throw BatonError.invalidArgument("state", "must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return state
            }
            let order = try fields.string("order") ?? "newest"
            guard order == "newest" || order == "oldest" else {
                throw BatonError.invalidArgument("order", "must be \"newest\" or \"oldest\"")
            }
            return .list(
                JobListing(
                    queue: try fields.name("queue"),
                    state: state,
                    errorContains: try self.errorContains(&fields),
                    after: try fields.integer("after", in: 0...Int64.max),
                    limit: Int(try fields.integer("limit", in: 1...1_000) ?? 100),
                    oldestFirst: order == "oldest"
                )
            )
        case "enqueue_batch":
            return .enqueueBatch(try self.enqueueList("jobs", in: fields, required: true))
        case "stats":
            return .stats
        case "backup":
            guard let path = try fields.string("path") else {
                throw BatonError.invalidArgument("path", "is required: where batond writes the copy")
            }
            guard path.hasPrefix("/"), path.utf8.count < 4_096,
                !path.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else {
                throw BatonError.invalidArgument("path", "must be an absolute path, with no control characters")
            }
            return .backup(path: path)
        default:
            throw BatonError(.unknownOp, "unknown op \"\(op)\"; the ops are \(Self.ops.joined(separator: ", "))")
        }
    }

    /// A list of jobs to enqueue, each an object with `enqueue`'s arguments.
    private func enqueueList(_ name: String, in fields: Fields, required: Bool) throws -> [EnqueueRequest] {
        guard let value = fields.value(name) else {
            if required { throw BatonError.invalidArgument(name, "is required: an array of jobs") }
            return []
        }
        guard case .array(let items) = value, !items.isEmpty || !required else {
            throw BatonError.invalidArgument(name, "must be a non-empty array of jobs, each like an `enqueue`")
        }
        guard items.count <= self.limits.maximumBatchJobs else {
            throw BatonError.invalidArgument(name, "may hold at most \(self.limits.maximumBatchJobs) jobs")
        }
        return try items.enumerated().map { index, item in
            guard case .object(let object) = item else {
                throw BatonError.invalidArgument("\(name)[\(index)]", "must be an object with `enqueue`'s arguments")
            }
            var nested = Fields(nested: object, limits: self.limits)
            do {
                return try self.enqueue(&nested)
            } catch let error as BatonError {
                throw BatonError(error.code, "\(name)[\(index)]: \(error.message)")
            }
        }
    }

    private func enqueue(_ fields: inout Fields) throws -> EnqueueRequest {
        guard let queue = try fields.name("queue") else {
            throw BatonError.invalidArgument("queue", "is required")
        }
        let payload = try fields.requiredJSON("payload")
        let delay = try fields.integer("delay_ms", in: 0...Int64(Int32.max) * 100)
        let runAt = try fields.integer("run_at", in: 0...Int64.max / 2)
        let schedule: EnqueueRequest.Schedule?
        switch (delay, runAt) {
        case (.some, .some):
            throw BatonError.invalidArgument("run_at", "cannot be given together with `delay_ms`")
        case (.some(let delay), nil): schedule = .delay(milliseconds: delay)
        case (nil, .some(let runAt)): schedule = .at(epochMilliseconds: runAt)
        case (nil, nil): schedule = nil
        }
        var request = EnqueueRequest(
            queue: queue,
            payload: payload,
            priority: try fields.integer("priority", in: Self.priorities) ?? 0,
            schedule: schedule,
            maxAttempts: try fields.integer("max_attempts", in: 1...1_000).map { Int($0) },
            backoff: try fields.backoff(),
            leaseMilliseconds: try fields.leaseDuration(),
            uniqueKey: try fields.name("unique_key")
        )
        request.concurrencyKey = try fields.name("concurrency_key")
        request.timeoutMilliseconds = try fields.integer("timeout_ms", in: Self.timeouts)
        request.group = try fields.name("group")
        request.trace = try fields.trace()
        if let value = fields.value("limits") {
            let rule = "must be an array of at most \(NamedLimits.maximumPerJob) limit names, each \(Fields.nameRule(limit: self.limits.maximumNameBytes)), not templates"
            guard case .array(let items) = value, items.count <= NamedLimits.maximumPerJob else {
                throw BatonError.invalidArgument("limits", rule)
            }
            for item in items {
                guard case .string(let name) = item, Fields.isValidName(name, limit: self.limits.maximumNameBytes),
                    !LimitSettings.isTemplate(name)
                else { throw BatonError.invalidArgument("limits", rule) }
                if !request.limits.contains(name) { request.limits.append(name) }
            }
        }
        if let value = fields.value("after") {
            guard case .array(let items) = value, items.count <= 100 else {
                throw BatonError.invalidArgument("after", "must be an array of at most 100 job ids")
            }
            request.after = try items.map { item in
                guard case .integer(let id) = item, id > 0 else {
                    throw BatonError.invalidArgument("after", "must hold job ids (positive integers)")
                }
                return id
            }
        }
        return request
    }

    /// `schedule {name, queue, payload, priority?, cron? | every_ms?, timezone?, overlap?, catch_up?}`.
    private func schedule(_ fields: inout Fields) throws -> RecurringSchedule {
        guard let name = try fields.name("name") else { throw BatonError.invalidArgument("name", "is required: the schedule's name") }
        guard let queue = try fields.name("queue") else { throw BatonError.invalidArgument("queue", "is required: where its jobs go") }
        let payload = try fields.requiredJSON("payload")
        let cron = try fields.string("cron")
        let every = try fields.integer("every_ms", in: 10...31_622_400_000)
        let zone = try fields.string("timezone")
        guard (cron == nil) != (every == nil) else {
            throw BatonError.invalidArgument("cron", "or `every_ms` is required, not both: when the job recurs")
        }
        if zone != nil, cron == nil {
            throw BatonError.invalidArgument("timezone", "goes with `cron`: `every_ms` counts milliseconds, not the clock")
        }
        let rule: RecurringSchedule.Rule
        do {
            rule = try RecurringSchedule.rule(cron: cron, timeZone: zone, every: every, anchor: 0)
        } catch {
            throw BatonError.invalidArgument(error.description.hasPrefix("unknown time zone") ? "timezone" : "cron", error.description)
        }
        func choice<T: RawRepresentable & CaseIterable>(_ name: String, _: T.Type, default value: T) throws -> T where T.RawValue == String {
            guard let text = try fields.string(name) else { return value }
            guard let choice = T(rawValue: text) else {
                throw BatonError.invalidArgument(name, "must be one of \(T.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))")
            }
            return choice
        }
        var schedule = RecurringSchedule(
            name: name, queue: queue, payload: payload, priority: try fields.integer("priority", in: Self.priorities) ?? 0, rule: rule,
            overlap: try choice("overlap", RecurringSchedule.Overlap.self, default: .allow),
            catchUp: try choice("catch_up", RecurringSchedule.CatchUp.self, default: .none)
        )
        schedule.trace = try fields.trace()
        return schedule
    }

    /// A rate: `{count, per_ms}`.
    private func rate(_ value: JSONValue) throws -> LimitSettings.Rate {
        let rule = "must be {\"count\": 1 to 10000, \"per_ms\": 1 to 86400000}"
        guard case .object(let object) = value else { throw BatonError.invalidArgument("rate", rule) }
        let fields = Fields(nested: object, limits: self.limits)
        guard let count = try fields.integer("count", in: 1...10_000), let per = try fields.integer("per_ms", in: 1...86_400_000) else {
            throw BatonError.invalidArgument("rate", rule)
        }
        return LimitSettings.Rate(count: Int(count), perMilliseconds: per)
    }

    /// A breaker's settings: `{failures, window_ms, cooldown_ms}`.
    private func breaker(_ value: JSONValue) throws -> CircuitBreaker.Settings {
        let rule = "must be {\"failures\": 1 to 1000, \"window_ms\": 1 to 86400000, \"cooldown_ms\": 1 to 86400000}"
        guard case .object(let object) = value else { throw BatonError.invalidArgument("breaker", rule) }
        let fields = Fields(nested: object, limits: self.limits)
        guard
            let failures = try fields.integer("failures", in: 1...1_000),
            let window = try fields.integer("window_ms", in: 1...86_400_000),
            let cooldown = try fields.integer("cooldown_ms", in: 1...86_400_000)
        else { throw BatonError.invalidArgument("breaker", rule) }
        return CircuitBreaker.Settings(failures: Int(failures), windowMilliseconds: window, cooldownMilliseconds: cooldown)
    }

    /// A filter's change: `{queue, state, error_contains?, limit?}`, and `reason?` for a cancel.
    private func bulkChange(_ action: BulkChange.Action, _ fields: inout Fields) throws -> BulkChange {
        guard let queue = try fields.name("queue") else {
            throw BatonError.invalidArgument("queue", "is required: the queue whose jobs to \(action.rawValue)")
        }
        let allowed = action.states.map(\.rawValue).joined(separator: ", ")
        guard let name = try fields.string("state"), let state = JobState(rawValue: name), action.states.contains(state) else {
            throw BatonError.invalidArgument("state", "is required: \(action.rawValue) takes jobs in one of \(allowed)")
        }
        let errorContains = try self.errorContains(&fields)
        return BulkChange(
            action: action, queue: queue, state: state, errorContains: errorContains,
            limit: try fields.integer("limit", in: 1...100_000_000).map { Int($0) },
            reason: action == .cancel ? try fields.string("reason") : nil
        )
    }

    /// `error_contains`, a filter on the last error's text, of `list` and the filtered changes.
    private func errorContains(_ fields: inout Fields) throws -> String? {
        let text = try fields.string("error_contains")
        if let text, text.isEmpty || text.utf8.count > 1_000 {
            throw BatonError.invalidArgument("error_contains", "must be 1 to 1000 bytes of text")
        }
        return text
    }

    private func claim(_ fields: inout Fields) throws -> ClaimRequest {
        guard case .array(let values)? = fields.value("queues") else {
            throw BatonError.invalidArgument("queues", fields.value("queues") == nil ? "is required" : "must be an array of queue names")
        }
        guard !values.isEmpty, values.count <= self.limits.maximumClaimQueues else {
            throw BatonError.invalidArgument("queues", "must name 1 to \(self.limits.maximumClaimQueues) queues")
        }
        var queues: [String] = []
        queues.reserveCapacity(values.count)
        for value in values {
            guard case .string(let queue) = value, Fields.isValidName(queue, limit: self.limits.maximumNameBytes) else {
                throw BatonError.invalidArgument("queues", "must hold queue names, each \(Fields.nameRule(limit: self.limits.maximumNameBytes))")
            }
            if !queues.contains(queue) { queues.append(queue) }
        }
        return ClaimRequest(
            queues: queues,
            worker: try fields.name("worker"),
            leaseMilliseconds: try fields.leaseDuration(),
            waitMilliseconds: try fields.integer("wait_ms", in: 0...self.limits.maximumWaitMilliseconds) ?? 0,
            detached: try fields.bool("detached") ?? false
        )
    }
}

/// Typed access to a request's fields, with errors that name the field.
struct Fields {
    private let storage: Storage
    private let limits: ProtocolLimits

    /// A request's own fields keep the text they were written with; the fields of a nested
    /// object (a `claim` inside a `complete`, a job of a batch) are read from its parsed
    /// value, and written out as text only when asked for.
    private enum Storage {
        case topLevel([String: JSONParser.TopLevelObject.Field])
        case nested([String: JSONValue])
    }

    init(_ fields: [String: JSONParser.TopLevelObject.Field], limits: ProtocolLimits) {
        self.storage = .topLevel(fields)
        self.limits = limits
    }

    init(nested object: [String: JSONValue], limits: ProtocolLimits) {
        self.storage = .nested(object)
        self.limits = limits
    }

    /// The field's value as given, `null` included. A field the parser kept verbatim (which
    /// a request may also use as a plain field, like `list`'s `state`) is parsed here, when a
    /// request reads it as a value.
    private func given(_ name: String) -> JSONValue? {
        let value: JSONValue? =
            switch self.storage {
            case .topLevel(let fields): fields[name]?.value
            case .nested(let object): object[name]
            }
        guard case .verbatim(let text) = value else { return value }
        return try? JSONValue(parsing: text, maximumDepth: self.limits.maximumDepth)
    }

    /// The field's value; an explicit `null` counts as absent.
    func value(_ name: String) -> JSONValue? {
        guard let value = self.given(name), value != .null else { return nil }
        return value
    }

    /// Whether the field is present and an explicit `null`.
    /// A setting to change: `nil` when absent (left as it is), `.some(nil)` for `null`
    /// (removed), else the value.
    func setting(_ name: String, in range: ClosedRange<Int64>) throws -> Int64?? {
        if self.isNull(name) { return .some(nil) }
        return try self.integer(name, in: range).map { .some($0) }
    }

    /// A setting held in an object (`rate`, `breaker`): `nil` when absent, `.some(nil)` for
    /// `null`, else what `parse` reads from it.
    func setting<T>(_ name: String, _ parse: (JSONValue) throws -> T) throws -> T?? {
        if self.isNull(name) { return .some(nil) }
        return try self.value(name).map { .some(try parse($0)) }
    }

    func isNull(_ name: String) -> Bool {
        self.given(name) == .null
    }

    func string(_ name: String) throws -> String? {
        guard let value = self.value(name) else { return nil }
        guard case .string(let string) = value else {
            throw BatonError.invalidArgument(name, "must be a string, not \(value.kindDescription)")
        }
        return string
    }

    /// A queue, key or worker name: a non-empty string within the name limit.
    func name(_ name: String) throws -> String? {
        guard let string = try self.string(name) else { return nil }
        guard Self.isValidName(string, limit: self.limits.maximumNameBytes) else {
            throw BatonError.invalidArgument(name, "must be \(Self.nameRule(limit: self.limits.maximumNameBytes))")
        }
        return string
    }

    static func nameRule(limit: Int) -> String {
        "1 to \(limit) bytes long, with no control characters"
    }

    /// Names are identifiers, not payloads: they are compared, indexed, logged and shown in
    /// terminals, so a name holding U+0000 (which SQLite's text functions cut at) or any
    /// other control character (a forged log line, a terminal escape) is refused.
    static func isValidName(_ string: String, limit: Int) -> Bool {
        guard !string.isEmpty, string.utf8.count <= limit else { return false }
        return !string.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }

    func bool(_ name: String) throws -> Bool? {
        guard let value = self.value(name) else { return nil }
        guard case .bool(let bool) = value else {
            throw BatonError.invalidArgument(name, "must be true or false, not \(value.kindDescription)")
        }
        return bool
    }

    func integer(_ name: String, in range: ClosedRange<Int64>) throws -> Int64? {
        guard let value = self.value(name) else { return nil }
        let integer: Int64
        switch value {
        case .integer(let exact): integer = exact
        case .double(let double) where double == double.rounded() && abs(double) < 9e15: integer = Int64(double)
        default: throw BatonError.invalidArgument(name, "must be an integer, not \(value.kindDescription)")
        }
        guard range.contains(integer) else {
            throw BatonError.invalidArgument(name, "must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return integer
    }

    func double(_ name: String, in range: ClosedRange<Double>) throws -> Double? {
        guard let value = self.value(name) else { return nil }
        let double: Double
        switch value {
        case .integer(let integer): double = Double(integer)
        case .double(let exact): double = exact
        default: throw BatonError.invalidArgument(name, "must be a number, not \(value.kindDescription)")
        }
        guard range.contains(double) else {
            throw BatonError.invalidArgument(name, "must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return double
    }

    /// A field's JSON text as the client wrote it (compact, for a nested object's field); an
    /// explicit `null` is kept as `null`.
    func json(_ name: String) -> String? {
        switch self.storage {
        case .topLevel(let fields): fields[name]?.text
        case .nested(let object): object[name]?.jsonText
        }
    }

    func requiredJSON(_ name: String) throws -> String {
        guard let text = self.json(name) else {
            throw BatonError.invalidArgument(name, "is required (any JSON value)")
        }
        return text
    }

    func jobID() throws -> Int64 {
        guard let id = try self.integer("job", in: 1...Int64.max) else {
            throw BatonError.invalidArgument("job", "is required: the job's id")
        }
        return id
    }

    func leaseReference() throws -> LeaseReference {
        let job = try self.jobID()
        guard let token = try self.integer("token", in: 1...Int64.max) else {
            throw BatonError.invalidArgument("token", "is required: the token your claim returned")
        }
        return LeaseReference(jobID: job, token: FencingToken(rawValue: token))
    }

    func leaseDuration() throws -> Int64? {
        try self.integer("lease_ms", in: 1...self.limits.maximumLeaseMilliseconds)
    }

    /// Progress as canonical JSON text: `{"percent": 0...100, "message"?: string}`.
    func progress() throws -> String? {
        guard let value = self.value("progress") else { return nil }
        guard case .object(let object) = value else {
            throw BatonError.invalidArgument("progress", "must be an object like {\"percent\": 40, \"message\": \"chunking\"}")
        }
        let nested = Fields(nested: object, limits: self.limits)
        guard let percent = try nested.double("percent", in: 0...100) else {
            throw BatonError.invalidArgument("progress.percent", "is required: a number from 0 to 100")
        }
        var writer = JSONWriter()
        writer.beginObject()
        writer.key("percent")
        writer.double(percent)
        if let message = try nested.string("message") {
            writer.member("message", message)
        }
        writer.endObject()
        return writer.text
    }

    func backoff() throws -> BackoffPolicy? {
        guard let value = self.value("backoff") else { return nil }
        guard case .object(let object) = value else {
            throw BatonError.invalidArgument("backoff", "must be an object {initial_ms, factor, max_ms}")
        }
        let nested = Fields(nested: object, limits: self.limits)
        let standard = BackoffPolicy.standard
        let initial = try nested.integer("initial_ms", in: 0...86_400_000) ?? standard.initialMilliseconds
        let factor = try nested.double("factor", in: 1...100) ?? standard.factor
        let maximum = try nested.integer("max_ms", in: 0...86_400_000) ?? max(standard.maximumMilliseconds, initial)
        guard maximum >= initial else {
            throw BatonError.invalidArgument("backoff.max_ms", "must be at least `initial_ms`")
        }
        return BackoffPolicy(initialMilliseconds: initial, factor: factor, maximumMilliseconds: maximum)
    }

    /// `trace`: `{traceparent, tracestate?}`, a W3C Trace Context.
    func trace() throws -> TraceContext? {
        guard let value = self.value("trace"), value != .null else { return nil }
        let rule = "must be an object {traceparent, tracestate?}, a W3C Trace Context"
        guard case .object(let object) = value else { throw BatonError.invalidArgument("trace", rule) }
        let nested = Fields(nested: object, limits: self.limits)
        guard let traceparent = try nested.string("traceparent") else { throw BatonError.invalidArgument("trace.traceparent", "is required") }
        let tracestate = try nested.string("tracestate")
        if let problem = TraceContext.problem(traceparent: traceparent, tracestate: tracestate) {
            throw BatonError.invalidArgument("trace", problem)
        }
        return TraceContext(traceparent: traceparent, tracestate: tracestate)
    }
}
