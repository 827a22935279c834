import BatonCore
import Dispatch
import Instrumentation
import NIOConcurrencyHelpers
import ServiceContextModule
import Tracing

/// One span per ended attempt of a job that carries a trace context, through
/// swift-distributed-tracing: `baton.attempt QUEUE`, a child of the producer's span, from
/// when the job became due (queued) through its claim to the attempt's end, with the queue,
/// job, attempt, lease token, wait and outcome. When this batond did not see the claim (it
/// restarted since, or another host of a fleet claimed the job), the span starts at the claim.
///
/// Off unless a tracer was bootstrapped (batond's `--otel-endpoint`): then the authorities
/// read nothing for it. On, each authority reads the trace contexts of the jobs whose
/// attempts a batch ended (one lookup per job, in the batch's transaction) and hands them
/// over with the batch's changes once it has committed; spans are made on a queue of their
/// own, never on the authority's thread.
final class AttemptTracer: Sendable {
    let isEnabled: Bool
    private let queue = DispatchQueue(label: "batond.traces")
    /// When each job this batond saw claimed became due, until its attempt ends.
    private let dueTimes = NIOLockedValueBox(ClaimDueTimes())

    init(isEnabled: Bool) {
        self.isEnabled = isEnabled
    }

    /// The jobs whose attempts the changes end: moves out of `running`, but to `running` again.
    static func endedAttempts(in changes: [ChangeLog.Change]) -> [Int64] {
        changes.compactMap { $0.from == .running && $0.event.state != .running ? $0.job : nil }
    }

    /// Notes the claims among `changes`, and emits the spans of the attempts they ended, for
    /// the jobs `traces` holds.
    func emit(_ changes: [ChangeLog.Change], traces: [Int64: StoredTrace]) {
        guard self.isEnabled, !changes.isEmpty else { return }
        self.queue.async {
            for change in changes {
                if change.event.kind == .claimed, let wait = change.milliseconds {
                    self.dueTimes.withLockedValue { $0.claimed(change.job, dueAt: change.event.at - wait) }
                } else if change.from == .running, change.event.state != .running {
                    let dueAt = self.dueTimes.withLockedValue { $0.ended(change.job) }
                    guard let stored = traces[change.job] else { continue }
                    Self.span(for: change, stored, dueAt: dueAt)
                }
            }
        }
    }

    private static func span(for change: ChangeLog.Change, _ stored: StoredTrace, dueAt: Int64?) {
        var producer = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(carrier(of: stored.trace), into: &producer, using: TraceCarrier())
        let endedAt = change.event.at
        let startedAt = change.milliseconds.map { endedAt - $0 } ?? stored.startedAt ?? endedAt
        let queue = change.queue ?? ""
        let span = InstrumentationSystem.tracer.startSpan(
            "baton.attempt \(queue)", context: producer, ofKind: .internal, at: instant(min(dueAt ?? startedAt, startedAt))
        )
        // A released attempt was given back: the count no longer includes it.
        let attempt = stored.attempts + (change.event.kind == .released ? 1 : 0)
        span.attributes["messaging.system"] = "baton"
        span.attributes["messaging.destination.name"] = queue
        span.attributes["messaging.message.id"] = "\(change.job)"
        span.attributes["baton.job.attempt"] = attempt
        span.attributes["baton.attempt.outcome"] = change.event.kind.rawValue
        span.attributes["baton.job.state"] = change.event.state.rawValue
        if let token = change.event.token { span.attributes["baton.lease.token"] = Int(token.rawValue) }
        if let dueAt { span.attributes["baton.job.wait_ms"] = Int(max(startedAt - dueAt, 0)) }
        span.addEvent(SpanEvent(name: "claimed", at: instant(startedAt)))
        span.addEvent(SpanEvent(name: change.event.kind.rawValue, at: instant(endedAt)))
        switch change.event.kind {
        case .failed, .expired:
            span.setStatus(SpanStatus(code: .error, message: change.event.detail))
        default:
            break
        }
        span.end(at: instant(endedAt))
    }

    private static func instant(_ milliseconds: Int64) -> DefaultTracerClock.Timestamp {
        DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: UInt64(max(milliseconds, 0)) * 1_000_000)
    }

    private static func carrier(of trace: TraceContext) -> [String: String] {
        var carrier = ["traceparent": trace.traceparent]
        if let state = trace.tracestate { carrier["tracestate"] = state }
        return carrier
    }
}

/// Reads `traceparent` and `tracestate` from a dictionary, for the tracer's propagator.
struct TraceCarrier: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? {
        carrier[key]
    }
}
