import BatonCore
import Instrumentation
import ServiceContextModule
import Tracing

#if canImport(Glibc)
import Glibc
#endif

/// W3C trace context for jobs (PROTOCOL.md, "Trace context"), through swift-distributed-tracing.
///
/// `enqueue` sends the caller's context: the task's `ServiceContext`, as the bootstrapped
/// instrument (swift-otel's, say) writes it out, else `$TRACEPARENT`. The ``Worker`` runs each
/// handler in a consumer span whose parent is the producer's context, current while it runs.
/// Without a bootstrapped tracer nothing is recorded, and only `$TRACEPARENT` travels.
enum JobTracing {
    /// Inside a ``Worker`` handler, the job's trace context, for when no tracer records the
    /// handler's span: what the handler enqueues still carries the job's trace.
    @TaskLocal static var handling: TraceContext?

    /// The caller's trace context, or `nil` when it has none.
    static func current() -> TraceContext? {
        if let trace = self.recorded() ?? self.handling { return trace }
        guard let parent = getenv("TRACEPARENT").map({ String(cString: $0) }) else { return nil }
        return TraceContext(traceparent: parent, tracestate: getenv("TRACESTATE").map { String(cString: $0) })
    }

    /// The task's service context as the bootstrapped instrument writes it out: `nil`
    /// without a tracer, or outside any span.
    static func recorded() -> TraceContext? {
        guard let context = ServiceContext.current else { return nil }
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: DictionaryInjector())
        guard let parent = carrier["traceparent"] else { return nil }
        return TraceContext(traceparent: parent, tracestate: carrier["tracestate"])
    }

    /// The producer's context, as the service context a consumer span starts from.
    static func context(of trace: TraceContext?) -> ServiceContext {
        var context = ServiceContext.topLevel
        guard let trace else { return context }
        var carrier = ["traceparent": trace.traceparent]
        if let state = trace.tracestate { carrier["tracestate"] = state }
        InstrumentationSystem.instrument.extract(carrier, into: &context, using: DictionaryExtractor())
        return context
    }
}

extension TraceContext {
    /// A reply's `trace` member, `{traceparent, tracestate?}`.
    init?(reply value: JSONValue?) {
        guard case .object(let trace)? = value, case .string(let parent)? = trace["traceparent"] else { return nil }
        let state: String? = if case .string(let state)? = trace["tracestate"] { state } else { nil }
        self.init(traceparent: parent, tracestate: state)
    }
}

struct DictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }
}

struct DictionaryExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? {
        carrier[key]
    }
}
