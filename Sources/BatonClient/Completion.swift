import BatonProtocol

/// How a job ends well: its result, and follow-up jobs enqueued in the same commit as the
/// completion, all or nothing (a stage's outputs never exist without its next stage).
///
/// A ``Worker`` handler built with `completing:` returns one; ``Lease/complete(_:)`` sends one.
public struct Completion: Sendable {
    let resultText: String?
    public var followUps: [FollowUp]

    /// Completed, with no result and nothing to follow.
    public static let done = Completion(resultText: nil, followUps: [])

    private init(resultText: String?, followUps: [FollowUp]) {
        self.resultText = resultText
        self.followUps = followUps
    }

    /// Completed with `result`, which `get` shows, and `followUps` enqueued with it.
    public init<Result: Encodable>(result: Result, followUps: [FollowUp] = []) throws {
        self.init(resultText: try jsonText(result), followUps: followUps)
    }

    /// Completed with no result, and `followUps` enqueued with it.
    public init(followUps: [FollowUp]) {
        self.init(resultText: nil, followUps: followUps)
    }

    /// A job to enqueue when, and only if, the job completes.
    public struct FollowUp: Sendable {
        let queue: String
        let payloadText: String
        var options: EnqueueOptions

        public init<Payload: Encodable>(queue: String, payload: Payload, options: EnqueueOptions = EnqueueOptions()) throws {
            self.queue = queue
            self.payloadText = try jsonText(payload)
            self.options = options
        }
    }

    /// The completion with each follow-up's `.current` trace fixed to the caller's now: the
    /// worker does this inside the handler's span, so follow-ups name it.
    func fixingTraces() -> Completion {
        var completion = self
        completion.followUps = self.followUps.map { followUp in
            var fixed = followUp
            fixed.options = followUp.options.fixingTrace()
            return fixed
        }
        return completion
    }

    /// `result` and `enqueue`, as `complete` takes them.
    func write(into request: inout JSONWriter) {
        if let resultText { request.member("result", rawJSON: resultText) }
        guard !self.followUps.isEmpty else { return }
        request.key("enqueue")
        request.beginArray()
        for followUp in self.followUps {
            request.beginObject()
            request.member("queue", followUp.queue)
            request.member("payload", rawJSON: followUp.payloadText)
            followUp.options.write(into: &request)
            request.endObject()
        }
        request.endArray()
    }
}

/// Throw it from a ``Worker`` handler to fail the job for good: no retry, whatever attempts
/// remain (a malformed input, say, that no retry can fix).
public struct PermanentFailure: Error, Sendable, CustomStringConvertible {
    public var reason: String

    public init(_ reason: String) {
        self.reason = reason
    }

    public var description: String { self.reason }
}
