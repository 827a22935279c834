import BatonCore

/// One thing a request needs the access policy to allow.
public enum AccessNeed: Hashable, Sendable {
    /// The role on a queue the request names.
    case queue(AccessPolicy.Role, String)
    /// The role on the queue of a job the request names by id.
    case job(AccessPolicy.Role, jobID: Int64)
    /// The job's live lease, used by the uid that claimed it.
    case lease(jobID: Int64)
    /// The role on every queue: the op reaches across the whole server.
    case server(AccessPolicy.Role)

    /// The job the need is about, if any.
    public var jobID: Int64? {
        switch self {
        case .job(_, let jobID), .lease(let jobID): jobID
        case .queue, .server: nil
        }
    }
}

extension Request {
    /// What the request needs, all of which must be allowed. This is the one table of which
    /// role each op takes; `protocol/PROTOCOL.md` shows it to clients.
    public var accessNeeds: [AccessNeed] {
        switch self {
        case .hello:
            []
        case .enqueue(let request):
            [.queue(.produce, request.queue)]
        case .enqueueBatch(let requests):
            requests.map { .queue(.produce, $0.queue) }
        case .claim(let request):
            request.queues.map { .queue(.work, $0) }
        case .heartbeat(let request):
            [.lease(jobID: request.lease.jobID)]
        case .checkpoint(let request):
            [.lease(jobID: request.lease.jobID)]
        case .fail(let request):
            [.lease(jobID: request.lease.jobID)]
        case .release(let request):
            [.lease(jobID: request.lease.jobID)]
        case .complete(let request):
            [.lease(jobID: request.lease.jobID)] + request.followUps.map { .queue(.produce, $0.queue) }
                + (request.next?.queues ?? []).map { .queue(.work, $0) }
        case .get(let jobID), .events(let jobID):
            [.job(.read, jobID: jobID)]
        case .list(let request):
            [request.queue.map { .queue(.read, $0) } ?? .server(.read)]
        case .stats, .metrics, .health, .workers:
            [.server(.read)]
        case .backup:
            [.server(.admin)]
        case .cancel(let jobID, _), .pause(let jobID, _), .resume(let jobID, _), .retry(let jobID, _), .setPriority(let jobID, _):
            [.job(.admin, jobID: jobID)]
        case .pauseQueue(let queue), .resumeQueue(let queue), .setQueue(let queue, _):
            [.queue(.admin, queue)]
        case .bulk(let change):
            [.queue(.admin, change.queue)]
        case .schedule(let schedule):
            [.queue(.admin, schedule.queue)]
        case .unschedule:
            [.server(.admin)]
        case .schedules, .limits:
            [.server(.read)]
        case .setLimit:
            [.server(.admin)]
        }
    }
}
