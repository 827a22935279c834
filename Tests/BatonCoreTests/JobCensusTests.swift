import BatonCore
import Testing

@Suite("The job census")
struct JobCensusTests {
    @Test("moves count jobs in and out of states, and a queue with none left is not listed")
    func moves() {
        var census = JobCensus()
        census.move(queue: "a", from: nil, to: .queued)
        census.move(queue: "a", from: nil, to: .queued)
        census.move(queue: "a", from: .queued, to: .running)
        census.move(queue: "a", from: .running, to: .running)
        #expect(census.counts == ["a": [.queued: 1, .running: 1]])
        census.move(queue: "a", from: .running, to: .completed)
        census.move(queue: "a", from: .queued, to: .cancelled)
        census.move(queue: "a", from: .completed, to: nil)
        census.move(queue: "a", from: .cancelled, to: nil)
        #expect(census.counts.isEmpty)
        #expect(JobCensus(counts: ["b": [.queued: 0]]).counts.isEmpty)
    }
}
