import BatonCore
import BatonProtocol

/// How a fenced request whose token holds no live lease is answered: one rule for every store.
///
/// A worker whose job was cancelled or paused under it is told so: its heartbeat or
/// checkpoint is refused with `cancelled` or `paused`, and an attempt to end the job
/// (`ending` names how) with `invalid_transition`, since a cancelled or paused job cannot be
/// completed, failed or released. A worker whose attempt ran out of time (its token is the
/// job's latest, and the job's last error is the timeout) gets `timed_out` for any call.
/// Every other token gets `lease_lost`. Each refusal carries the job's current state.
struct LeaseRefusal {
    var error: BatonError
    /// Whether it is a late outcome (an end reported for a job cancelled or paused under its
    /// worker) rather than a stale token, for the metrics.
    var late: Bool

    /// - Parameters:
    ///   - state: the job's state now.
    ///   - leaseToken: the token of the job's latest lease.
    ///   - lastError: the job's last error, which holds a cancellation's reason.
    init(_ reference: LeaseReference, state: JobState, leaseToken: FencingToken?, lastError: String?, ending: String?) {
        let revokedUnderIt = leaseToken == reference.token && (state == .cancelled || state == .paused)
        self.late = false
        if leaseToken == reference.token, state == .retrying || state == .failed, AttemptTimeout.isReason(lastError) {
            self.error = Self.timedOut(reference.jobID, lastError ?? "", state: state)
            return
        }
        switch (revokedUnderIt, ending) {
        case (true, let verb?):
            self.late = true
            self.error = BatonError(.invalidTransition, "job \(reference.jobID) is \(state.rawValue): it cannot be \(verb)", state: state)
        case (true, nil) where state == .cancelled:
            self.error = BatonError(
                .cancelled, "job \(reference.jobID) was cancelled: \(lastError ?? "cancelled"); stop working on it", state: state)
        case (true, nil):
            self.error = BatonError(
                .paused, "job \(reference.jobID) was paused; stop working on it, it resumes from its checkpoint", state: state)
        case (false, _):
            self.error = BatonError(
                .leaseLost, "token \(reference.token) does not hold job \(reference.jobID) (it is \(state.rawValue))", state: state)
        }
    }

    /// The refusal of a fenced request whose attempt ran out of time (`reason` says how long
    /// it had): the worker stops, and the job is retried by its rules.
    static func timedOut(_ jobID: Int64, _ reason: String, state: JobState) -> BatonError {
        BatonError(.timedOut, "job \(jobID)'s attempt \(reason); stop working on it", state: state)
    }

    /// The refusal of a request naming a job that does not exist.
    static func notFound(_ jobID: Int64) -> BatonError {
        BatonError(.notFound, "no job \(jobID)")
    }

    /// The refusal of a change to a finished job that only an unfinished one can take.
    static func finished(_ job: Job, changing setting: String) -> BatonError {
        BatonError(.invalidTransition, "job \(job.id) is \(job.state.rawValue): a finished job's \(setting) cannot change", state: job.state)
    }
}
