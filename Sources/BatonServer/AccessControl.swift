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

extension Authority {
    /// Refuses with `forbidden` whatever `policy` does not grant the request's sender.
    ///
    /// Runs before the op, so a refused request changes nothing. A job the request names that
    /// does not exist is left for the op to answer `not_found`, and a lease that is not live
    /// for it to answer `lease_lost`.
    func authorize(_ submission: Submission, under policy: AccessPolicy, _ context: inout BatchContext) throws {
        let peer = submission.connection.peer
        let op = submission.request.op
        for need in submission.request.accessNeeds {
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
                guard let queue = try context.tx.queue(ofJob: jobID) else { continue }
                guard policy.allows(role, on: queue, for: peer) else {
                    throw Self.forbidden(op, role, "queue \"\(queue)\" (job \(jobID))", peer)
                }
            case .lease(let jobID):
                guard let lease = self.running[jobID]?.lease else { continue }
                guard let holder = lease.holder, holder == peer?.uid else {
                    let owner = lease.holder.map { "uid \($0)" } ?? "a process batond could not identify"
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

    /// Whether a reply may show `queue`'s lease tokens to the sender: with a policy, only an
    /// admin of the queue or the uid that holds the job's lease sees them.
    func showsTokens(of job: Job, to peer: PeerIdentity?) -> Bool {
        guard let policy = self.access.policy else { return true }
        if policy.allows(.admin, on: job.queue, for: peer) { return true }
        guard let peer, let holder = self.running[job.id]?.lease.holder else { return false }
        return holder == peer.uid
    }
}
