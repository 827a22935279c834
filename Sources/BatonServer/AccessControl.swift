import BatonCore
import BatonProtocol
import NIOConcurrencyHelpers

/// The access policy in force, shared by the authority (which checks every request against
/// it) and whatever reloads it (SIGHUP). `nil` means no policy: the socket file's mode is the
/// only gate, and every op is open to whoever can connect.
public final class AccessControl: Sendable {
    private let box: NIOLockedValueBox<AccessPolicy?>

    public init(_ policy: AccessPolicy? = nil) {
        self.box = NIOLockedValueBox(policy)
    }

    /// The policy requests are checked against now.
    public var policy: AccessPolicy? { self.box.withLockedValue { $0 } }

    /// Puts `policy` in force for every request decided from now on.
    public func replace(with policy: AccessPolicy) {
        self.box.withLockedValue { $0 = policy }
    }
}

extension AccessControl {
    /// Refuses with `forbidden` whatever `policy` does not grant the request's sender: the
    /// one access rule, for every store.
    ///
    /// Runs before the op, so a refused request changes nothing. A job the request names that
    /// does not exist is left for the op to answer `not_found`, and a lease that is not live
    /// for it to answer `lease_lost`.
    ///
    /// - Parameters:
    ///   - queueOfJob: the queue of a job, `nil` for no such job.
    ///   - holderOfLease: for a job with a live lease, the uid that holds it (`.some(nil)`
    ///     when batond could not identify it); `nil` when the job has no live lease.
    static func authorize(
        _ request: Request, from peer: PeerIdentity?, under policy: AccessPolicy,
        queueOfJob: (Int64) throws -> String?, holderOfLease: (Int64) -> UInt32??
    ) throws {
        let op = request.op
        for need in request.accessNeeds {
            switch need {
            case .queue(let role, let queue):
                guard policy.allows(role, on: queue, for: peer) else {
                    throw Self.forbidden(op, role, "queue \"\(queue)\"", peer)
                }
            case .server(let role):
                guard policy.allows(role, on: nil, for: peer) else {
                    throw Self.forbidden(op, role, "every queue (a grant for \"*\")", peer)
                }
            case .job(let role, let jobID):
                guard let queue = try queueOfJob(jobID) else { continue }
                guard policy.allows(role, on: queue, for: peer) else {
                    throw Self.forbidden(op, role, "queue \"\(queue)\" (job \(jobID))", peer)
                }
            case .lease(let jobID):
                guard let holder = holderOfLease(jobID) else { continue }
                guard let holder, holder == peer?.uid else {
                    let owner = holder.map { "uid \($0)" } ?? "a process batond could not identify"
                    throw BatonError(
                        .forbidden, "\(op) of job \(jobID) by \(Self.describe(peer)): its lease belongs to \(owner), which claimed it")
                }
            }
        }
    }

    private static func forbidden(_ op: String, _ role: AccessPolicy.Role, _ scope: String, _ peer: PeerIdentity?) -> BatonError {
        BatonError(.forbidden, "\(op) needs the \(role.rawValue) role on \(scope), which the access policy does not grant \(Self.describe(peer))")
    }

    private static func describe(_ peer: PeerIdentity?) -> String {
        guard let peer else { return "an unidentified peer" }
        return "uid \(peer.uid)" + (peer.gid.map { " (gid \($0))" } ?? "")
    }

    /// Whether a reply may show a job's lease tokens to the sender: with a policy, only an
    /// admin of the job's queue or the uid that holds its lease (`holder`) sees them.
    func showsTokens(of job: Job, holder: UInt32?, to peer: PeerIdentity?) -> Bool {
        guard let policy = self.policy else { return true }
        if policy.allows(.admin, on: job.queue, for: peer) { return true }
        guard let peer, let holder else { return false }
        return holder == peer.uid
    }
}

extension Authority {
    /// Refuses with `forbidden` whatever `policy` does not grant the request's sender; see
    /// ``AccessControl/authorize(_:from:under:queueOfJob:holderOfLease:)``.
    func authorize(_ submission: Submission, under policy: AccessPolicy, _ context: inout BatchContext) throws {
        let tx = context.tx
        try AccessControl.authorize(
            submission.request, from: submission.connection.peer, under: policy,
            queueOfJob: { try tx.queue(ofJob: $0) },
            holderOfLease: { jobID in self.running[jobID].map { $0.lease.holder } }
        )
    }

    /// Whether a reply may show a job's lease tokens to the sender.
    func showsTokens(of job: Job, to peer: PeerIdentity?) -> Bool {
        self.access.showsTokens(of: job, holder: self.running[job.id]?.lease.holder, to: peer)
    }
}
