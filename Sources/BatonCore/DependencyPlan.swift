/// What becomes of a new job given the jobs it names in `after`, as they stand when it is
/// enqueued: one rule for every store.
///
/// Only existing jobs can be named, so a new job can never close a cycle. A job whose
/// dependency has already failed or been cancelled will never run, so it is cancelled at
/// once, with the reason. Completed dependencies no longer count.
public enum DependencyPlan: Hashable, Sendable {
    /// Refused: `after` names a job that does not exist.
    case missing(Int64)
    /// Enqueued and cancelled at once, for `reason`.
    case cancelled(reason: String)
    /// Enqueued, held back until these (distinct, unfinished) jobs complete.
    case waiting(on: [Int64])
    /// Enqueued, claimable at its time.
    case ready

    /// - Parameters:
    ///   - after: the jobs the request names, in its order.
    ///   - states: the state of each that exists.
    public init(after: [Int64], states: [Int64: JobState]) {
        if let missing = after.first(where: { states[$0] == nil }) {
            self = .missing(missing)
        } else if let dead = after.first(where: { states[$0] == .failed || states[$0] == .cancelled }) {
            self = .cancelled(reason: "dependency \(dead) \(states[dead] == .failed ? "failed" : "was cancelled")")
        } else {
            var seen = Set<Int64>()
            let unfinished = after.filter { states[$0] != .completed && seen.insert($0).inserted }
            self = unfinished.isEmpty ? .ready : .waiting(on: unfinished)
        }
    }
}
