import BatonCore
import Testing

@Suite("Trace context")
struct TraceContextTests {
    @Test("a traceparent is taken only in the W3C's form, and stored with its tracestate")
    func validation() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let trace = TraceContext(traceparent: parent, tracestate: "vendor=abc")
        #expect(trace?.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(trace?.parentSpanID == "00f067aa0ba902b7")
        #expect(TraceContext(stored: trace?.stored) == trace)
        #expect(TraceContext(stored: parent) == TraceContext(traceparent: parent))
        // A later version may add fields; version 00 may not.
        #expect(TraceContext(traceparent: "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra") != nil)
        for invalid in [
            parent.uppercased(), parent + "-extra", "ff" + parent.dropFirst(2),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "",
        ] {
            #expect(TraceContext(traceparent: String(invalid)) == nil, "\(invalid)")
        }
        #expect(TraceContext(traceparent: parent, tracestate: String(repeating: "a", count: 513)) == nil)
        #expect(TraceContext(traceparent: parent, tracestate: "caf\u{e9}=1") == nil)
    }

    @Test("due times are kept from claim to end, and only the newest claims past the limit")
    func dueTimes() {
        var times = ClaimDueTimes(limit: 3)
        times.claimed(1, dueAt: 100)
        #expect(times.ended(1) == 100)
        #expect(times.ended(1) == nil)
        // Job 1 claimed again: its first claim, forgotten past the limit, must not take the second's.
        times.claimed(2, dueAt: 200)
        times.claimed(1, dueAt: 300)
        times.claimed(3, dueAt: 400)
        #expect(times.count == 3)
        #expect(times.ended(1) == 300)
        times.claimed(4, dueAt: 500)
        times.claimed(5, dueAt: 600)
        #expect(times.ended(2) == nil, "the oldest claim is forgotten past the limit")
        #expect(times.ended(4) == 500)
        // Jobs whose ends this process never sees cannot grow it.
        for job in Int64(10)..<1_000 { times.claimed(job, dueAt: job) }
        #expect(times.count == 3)
        #expect(times.ended(999) == 999)
    }
}
