import BatonCore
import BatonProtocol

/// The replies whose shape does not depend on the store: every authority answers `hello`,
/// `events`, `stats` and `workers` through these, from the figures its store gives.
extension Reply {
    static func hello(id: String?, durability: String, limits: ProtocolLimits, defaults: JobDefaults) -> [UInt8] {
        Reply.success(id: id) { reply in
            reply.member("server", "batond")
            reply.member("version", batondVersion)
            reply.member("protocol", batonProtocolVersion)
            reply.member("durability", durability)
            reply.key("limits")
            reply.beginObject()
            reply.member("max_line_bytes", limits.maximumLineBytes)
            reply.member("max_depth", limits.maximumDepth)
            reply.member("max_name_bytes", limits.maximumNameBytes)
            reply.member("max_wait_ms", limits.maximumWaitMilliseconds)
            reply.member("max_lease_ms", limits.maximumLeaseMilliseconds)
            reply.member("max_claim_queues", limits.maximumClaimQueues)
            reply.member("max_values", limits.maximumValues)
            reply.endObject()
            reply.key("defaults")
            reply.beginObject()
            reply.member("max_attempts", defaults.maxAttempts)
            reply.member("lease_ms", defaults.leaseMilliseconds)
            reply.member("backoff_initial_ms", defaults.backoff.initialMilliseconds)
            reply.key("backoff_factor")
            reply.double(defaults.backoff.factor)
            reply.member("backoff_max_ms", defaults.backoff.maximumMilliseconds)
            reply.endObject()
        }
    }

    /// A bulk change's answer: how many jobs it changed, and whether it went through all
    /// it matched (`false` when batond stopped first; every step before was committed).
    static func bulk(id: String?, _ progress: BulkChange.Progress, done: Bool) -> [UInt8] {
        Reply.success(id: id) { $0.member("changed", Int64(progress.changed)); $0.member("done", done) }
    }

    /// `schedule`'s answer: the schedule's name and its next slot.
    static func scheduled(id: String?, _ schedule: RecurringSchedule) -> [UInt8] {
        Reply.success(id: id) { $0.member("name", schedule.name); $0.member("next_at", optional: schedule.nextAt) }
    }

    /// The `schedules` reply: every schedule, by name.
    static func schedules(id: String?, _ schedules: [RecurringSchedule]) -> [UInt8] {
        Reply.success(id: id) { reply in
            reply.key("schedules")
            reply.beginArray()
            for schedule in schedules {
                let rule = schedule.storedRule
                reply.beginObject()
                reply.member("name", schedule.name)
                reply.member("queue", schedule.queue)
                reply.member("payload", rawJSON: schedule.payload)
                reply.member("priority", schedule.priority)
                reply.member("cron", optional: rule.cron)
                reply.member("timezone", optional: rule.timeZone)
                reply.member("every_ms", optional: rule.every)
                reply.member("overlap", schedule.overlap.rawValue)
                reply.member("catch_up", schedule.catchUp.rawValue)
                reply.member("next_at", optional: schedule.nextAt)
                reply.member("last_job", optional: schedule.lastJob)
                if let trace = schedule.trace { reply.trace(trace) }
                reply.endObject()
            }
            reply.endArray()
        }
    }

    /// `set_queue`'s answer: the queue's settings now.
    static func queueSettings(id: String?, queue: String, _ settings: QueueSettings) -> [UInt8] {
        Reply.success(id: id) { reply in
            reply.member("queue", queue)
            reply.member("max_running", optional: settings.maxRunning.map { Int64($0) })
            reply.member("timeout_ms", optional: settings.timeoutMilliseconds)
            reply.member("breaker", breaker: settings.breaker)
        }
    }

    /// `set_priority`'s answer: the job's state, and the priority it has now.
    static func priority(id: String?, state: JobState, priority: Int64) -> [UInt8] {
        Reply.success(id: id) { $0.member("state", state.rawValue); $0.member("priority", priority) }
    }

    /// A job's audit trail (``JobEvent/trail(of:recorded:followUps:)``), with its tokens
    /// only where the sender may see them.
    static func events(id: String?, of jobID: Int64, _ events: [JobEvent], showsTokens: Bool) -> [UInt8] {
        Reply.success(id: id) { reply in
            reply.member("job", jobID)
            reply.key("events")
            reply.beginArray()
            for var event in events {
                if !showsTokens { event.token = nil }
                reply.jobEvent(event)
            }
            reply.endArray()
        }
    }

    /// The `stats` reply.
    ///
    /// - Parameters:
    ///   - oldestReady: each queue's oldest ready job's `run_at`, where it has one.
    ///   - limits: each limited queue's `max_running` and running jobs, by name.
    static func stats(
        id: String?, counts: [String: [JobState: Int]], oldestReady: [String: Int64], now: Int64, pausedQueues: [String],
        limits: [(queue: String, maxRunning: Int, running: Int)], breakers: [(queue: String, state: CircuitBreaker.State)] = [],
        namedLimits: [NamedLimits.Use] = [], pruned: Int64, leases: Int, parkedClaims: Int
    ) -> [UInt8] {
        Reply.success(id: id) { reply in
            reply.key("queues")
            reply.beginObject()
            for name in counts.keys.sorted() {
                reply.key(name)
                reply.beginObject()
                for state in JobState.allCases {
                    reply.member(state.rawValue, counts[name]?[state] ?? 0)
                }
                reply.member("oldest_ready_age_ms", optional: oldestReady[name].map { max(now - $0, 0) })
                reply.endObject()
            }
            reply.endObject()
            reply.key("paused_queues")
            reply.beginArray()
            for queue in pausedQueues { reply.string(queue) }
            reply.endArray()
            reply.key("queue_limits")
            reply.beginObject()
            for limit in limits {
                reply.key(limit.queue)
                reply.beginObject()
                reply.member("max_running", limit.maxRunning)
                reply.member("running", limit.running)
                reply.endObject()
            }
            reply.endObject()
            // The breakers that are not closed: open (with when the trial may start) or half-open.
            reply.key("breakers")
            reply.beginObject()
            for (queue, state) in breakers {
                reply.key(queue)
                reply.beginObject()
                reply.member("state", state.name)
                switch state {
                case .open(let until): reply.member("trial_at", until)
                case .halfOpen(let trial): reply.member("trial", optional: trial)
                case .closed: break
                }
                reply.endObject()
            }
            reply.endObject()
            // The named limits set or in use, by name.
            reply.key("limits")
            reply.beginObject()
            for use in namedLimits.prefix(Reply.maximumLimitsShown) {
                reply.key(use.name)
                reply.beginObject()
                reply.limitUse(use)
                reply.endObject()
            }
            reply.endObject()
            reply.member("pruned", pruned)
            reply.member("leases", leases)
            reply.member("parked_claims", parkedClaims)
        }
    }

    /// The `workers` reply: this server's connected workers with the jobs each holds, and,
    /// on a store many hosts share, the hosts seen lately.
    static func workers(id: String?, _ workers: [(WorkerRegistry.Worker, jobs: [Int64])], hosts: [FleetHost]? = nil) -> [UInt8] {
        Reply.success(id: id) { reply in
            reply.key("workers")
            reply.beginArray()
            for (worker, jobs) in workers {
                reply.beginObject()
                reply.member("connection", Int64(worker.connection.number))
                reply.member("worker", optional: worker.name)
                reply.member("pid", optional: worker.connection.peer.map { Int64($0.pid) })
                reply.member("uid", optional: worker.connection.peer.map { Int64($0.uid) })
                reply.member("since", worker.since)
                reply.member("last_heartbeat_at", optional: worker.lastHeartbeatAt)
                reply.key("jobs")
                reply.beginArray()
                for job in jobs { reply.integer(job) }
                reply.endArray()
                reply.endObject()
            }
            reply.endArray()
            if let hosts {
                reply.key("hosts")
                reply.beginArray()
                for host in hosts {
                    reply.beginObject()
                    reply.member("host", host.name)
                    reply.member("started_at", host.startedAt)
                    reply.member("seen_at", host.seenAt)
                    reply.endObject()
                }
                reply.endArray()
            }
        }
    }
}

extension Outcome {
    /// The answer to a completion: its follow-ups' ids when it named some, and, when it
    /// asked for the next job, that job with its lease (`null` when none was ready).
    static func completed(
        _ request: CompleteRequest, followUps: [(jobID: Int64, duplicate: Bool)]?,
        next: (job: ClaimedJob, token: FencingToken, expiresAt: Int64)?, id: String?
    ) -> Outcome {
        let line = Reply.success(id: id) { reply in
            if let followUps, !request.followUps.isEmpty { reply.enqueued(followUps) }
            guard request.next != nil else { return }
            reply.key("job")
            if let next {
                reply.claimedJob(next.job, token: next.token, leaseExpiresAt: next.expiresAt)
            } else {
                reply.null()
            }
        }
        return Outcome(line: line, granted: next.map { LeaseReference(jobID: $0.job.id, token: $0.token) })
    }
}
