import BatonCore
import BatonProtocol
import HTTPTypes
import Hummingbird
import Logging

/// The web console: pages for queues, workers and jobs, and, with `--console-actions`,
/// the POSTs that cancel, retry, pause and resume.
///
/// Every page is read from the authority with the protocol's own requests (`stats`,
/// `metrics`, `health`, `workers`, `list`, `get`, `events`), so the console shows what a
/// socket client would see, and every action is the protocol's op, recorded in the job's
/// events with the reason "via web console".
struct Console: Sendable {
    let authority: ConsoleAuthority
    let pages: ConsolePages
    let guardian: ConsoleGuard
    let rates = ConsoleRates()
    let logger: Logger

    init(authority: any JobAuthority, mode: ServerConfiguration.ConsoleMode, host: String, store: String, listeningOn: String, logger: Logger) {
        self.authority = ConsoleAuthority(authority: authority)
        self.guardian = ConsoleGuard(listeningOn: listeningOn)
        self.pages = ConsolePages(host: host, store: store, actionsEnabled: mode == .actions, token: self.guardian.token)
        self.logger = logger
    }

    /// What an action records as its reason.
    static let via = "via web console"

    func register(on router: Router<BasicRequestContext>) {
        router.get("/") { request, _ in
            try self.checkHost(request)
            return Response(status: .seeOther, headers: [.location: "/queues"])
        }
        router.get("/console/console.css") { _, _ in Self.asset(ConsoleAssets.css, type: "text/css; charset=utf-8") }
        router.get("/console/console.js") { _, _ in Self.asset(ConsoleAssets.script, type: "text/javascript; charset=utf-8") }
        router.get("/queues") { request, _ in try await self.serving { try await self.queuesPage(request) } }
        router.get("/workers") { request, _ in try await self.serving { try await self.workersPage(request) } }
        router.get("/jobs") { request, _ in try await self.serving { try await self.jobsPage(request) } }
        router.get("/jobs/{id}") { request, context in
            try await self.serving { try await self.jobPage(request, id: context.parameters.get("id", as: Int64.self)) }
        }
        router.post("/jobs/{id}/{action}") { request, context in
            try await self.act(on: request, back: "/jobs/\(context.parameters.get("id") ?? "")") {
                guard let id = context.parameters.get("id", as: Int64.self), id > 0 else { throw HTTPError(.notFound) }
                switch context.parameters.get("action") {
                case "cancel": return (.cancel(jobID: id, reason: "cancelled \(Self.via)"), "/jobs/\(id)", "job \(id)")
                case "pause": return (.pause(jobID: id, reason: Self.via), "/jobs/\(id)", "job \(id)")
                case "resume": return (.resume(jobID: id, reason: Self.via), "/jobs/\(id)", "job \(id)")
                case "retry": return (.retry(jobID: id, reason: Self.via), "/jobs/\(id)", "job \(id)")
                default: throw HTTPError(.notFound)
                }
            }
        }
        router.post("/queues/{queue}/{action}") { request, context in
            try await self.act(on: request, back: "/queues") {
                guard let queue = context.parameters.get("queue"), Self.isQueueName(queue) else { throw HTTPError(.notFound) }
                switch context.parameters.get("action") {
                case "pause": return (.pauseQueue(queue), "/queues", "queue \(queue)")
                case "resume": return (.resumeQueue(queue), "/queues", "queue \(queue)")
                default: throw HTTPError(.notFound)
                }
            }
        }
    }

    // MARK: Pages

    /// A page, or, when the authority refuses to read (batond stopping, its store out of
    /// reach), a page that says so: 503, which the page's refresh shows as "not updating".
    private func serving(_ page: () async throws -> Response) async throws -> Response {
        do {
            return try await page()
        } catch let refusal as ConsoleAuthority.Refusal {
            return self.problem(.serviceUnavailable, "batond cannot answer now", "\(refusal.code): \(refusal.message)", back: "/queues")
        }
    }

    private func queuesPage(_ request: Request) async throws -> Response {
        try self.checkHost(request)
        async let stats = self.authority.ask(.stats)
        async let health = self.authority.ask(.health)
        async let metrics = self.authority.ask(.metrics(json: true))
        let (statsReply, healthReply, metricsReply) = try await (stats, health, metrics)
        let now = self.now()
        var waits: [String: Double] = [:]
        for histogram in metricsReply["histograms"]?.array ?? [] where histogram["name"]?.string == "baton_job_wait_seconds" {
            if let queue = histogram["labels"]?["queue"]?.string, let p95 = histogram["p95"]?.number { waits[queue] = p95 }
        }
        var counts: ConsoleRates.Counts = [:]
        for sample in metricsReply["samples"]?.array ?? [] {
            guard let queue = sample["labels"]?["queue"]?.string, let value = sample["value"]?.number else { continue }
            switch sample["name"]?.string {
            case "baton_jobs_completed_total": counts[queue, default: (0, 0)].completed = value
            case "baton_jobs_failed_total": counts[queue, default: (0, 0)].failed = value
            default: break
            }
        }
        let rates = await self.rates.record(counts, at: now)
        let body = self.pages.queues(stats: statsReply, health: healthReply, waits: waits, rates: rates, now: now)
        return Self.html(self.pages.page("Queues", .queues, notice: Self.notice(request), body))
    }

    private func workersPage(_ request: Request) async throws -> Response {
        try self.checkHost(request)
        let reply = try await self.authority.ask(.workers)
        return Self.html(self.pages.page("Workers", .workers, self.pages.workers(reply, now: self.now())))
    }

    private func jobsPage(_ request: Request) async throws -> Response {
        try self.checkHost(request)
        let query = request.uri.queryParameters
        func text(_ name: String) -> String? {
            query.get(name).flatMap { $0.isEmpty ? nil : $0 }
        }
        var listing = JobListing(limit: 50)
        if let queue = text("queue") {
            guard Self.isQueueName(queue) else { return self.problem(.badRequest, "No such queue", "A queue name is 1 to 255 bytes.", back: "/jobs") }
            listing.queue = queue
        }
        if let name = text("state") {
            guard let state = JobState(rawValue: name) else { return self.problem(.badRequest, "No such state", "“\(name)” is not a job state.", back: "/jobs") }
            listing.state = state
        }
        if let error = text("error") {
            guard error.utf8.count <= 1_000 else { return self.problem(.badRequest, "Filter too long", "Search for at most 1000 bytes of error text.", back: "/jobs") }
            listing.errorContains = error
        }
        if let after = text("after") {
            guard let cursor = Int64(after), cursor >= 0 else { return self.problem(.badRequest, "Bad page", "The page cursor is a job id.", back: "/jobs") }
            listing.after = cursor
        }
        async let stats = self.authority.ask(.stats)
        async let jobs = self.authority.ask(.list(listing))
        let (statsReply, jobsReply) = try await (stats, jobs)
        let queues = (statsReply["queues"]?.members.keys).map { Array($0).sorted() } ?? []
        return Self.html(
            self.pages.page(
                "Jobs", .jobs, above: self.pages.jobFilter(listing, queues: queues), self.pages.jobs(jobsReply, listing: listing, now: self.now())))
    }

    private func jobPage(_ request: Request, id: Int64?) async throws -> Response {
        try self.checkHost(request)
        guard let id, id > 0 else { return self.problem(.notFound, "No such job", "Job ids are positive numbers.", back: "/jobs") }
        async let job = self.authority.ask(.get(jobID: id))
        async let events = self.authority.ask(.events(jobID: id))
        do {
            let (jobReply, eventsReply) = try await (job, events)
            return Self.html(
                self.pages.page("Job \(id)", .jobs, notice: Self.notice(request), self.pages.job(jobReply, events: eventsReply, now: self.now())))
        } catch let refusal as ConsoleAuthority.Refusal where refusal.code == "not_found" {
            return self.problem(.notFound, "No such job", "Job \(id) does not exist, or retention has deleted it.", back: "/jobs")
        }
    }

    // MARK: Actions

    /// Runs one action: refused unless actions are on and the request passes the guard.
    private func act(
        on request: Request, back: String,
        _ decide: () throws -> (request: BatonProtocol.Request, then: String, subject: String)
    ) async throws -> Response {
        guard self.pages.actionsEnabled else {
            return self.problem(.forbidden, "Actions are off", "This console is read-only: start batond with --console-actions to act from it.", back: back)
        }
        var request = request
        let body = try await request.collectBody(upTo: 4_096)
        let form = Self.formFields(String(buffer: body))
        if let refusal = self.guardian.refusal(
            host: request.head.authority, origin: request.headers[.origin], fetchSite: request.headers[Self.fetchSite],
            formToken: form["csrf"]
        ) {
            self.logger.warning("web console: action refused", metadata: ["path": "\(request.uri.path)", "reason": "\(refusal)"])
            return self.problem(.forbidden, "Refused", "This request cannot act: \(refusal).", back: back)
        }
        let (protocolRequest, then, subject) = try decide()
        do {
            _ = try await self.authority.ask(protocolRequest)
        } catch let refusal as ConsoleAuthority.Refusal {
            return self.problem(.conflict, "Not done", refusal.message, back: back)
        }
        self.logger.notice("web console: \(protocolRequest.op) \(subject)", metadata: ["op": "\(protocolRequest.op)"])
        return Response(status: .seeOther, headers: [.location: "\(then)?done=\(protocolRequest.op)"])
    }

    // MARK: Parts

    private static let fetchSite = HTTPField.Name("Sec-Fetch-Site")!

    private func checkHost(_ request: Request) throws {
        guard self.guardian.accepts(host: request.head.authority) else {
            throw HTTPError(.misdirectedRequest, message: "this console answers to loopback names only (localhost, 127.0.0.1, [::1])")
        }
    }

    private func problem(_ status: HTTPResponse.Status, _ title: String, _ message: String, back: String) -> Response {
        Self.html(self.pages.problem(title, message, back: back), status: status)
    }

    private static func notice(_ request: Request) -> HTML {
        guard let done = request.uri.queryParameters.get("done"), !done.isEmpty, done.utf8.count < 40 else { return "" }
        return "<p class=\"notice\" role=\"status\">Done: \(done) \(Self.via).</p>\n"
    }

    static func html(_ html: HTML, status: HTTPResponse.Status = .ok) -> Response {
        var headers = Self.securityHeaders
        headers[.contentType] = "text/html; charset=utf-8"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: html.text)))
    }

    private static func asset(_ text: String, type: String) -> Response {
        var headers = Self.securityHeaders
        headers[.contentType] = type
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// No script, style or form target but the console's own; never in a frame.
    private static let securityHeaders: HTTPFields = [
        .contentSecurityPolicy: "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        HTTPField.Name("X-Frame-Options")!: "DENY",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Referrer-Policy")!: "same-origin",
        .cacheControl: "no-store",
    ]

    static func isQueueName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 255
    }

    /// `a=1&b=x%20y` → `["a": "1", "b": "x y"]`.
    static func formFields(_ body: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = parts.first.flatMap({ Self.percentDecoded($0) }) else { continue }
            fields[name] = parts.count > 1 ? Self.percentDecoded(parts[1]) : ""
        }
        return fields
    }

    private static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next(), let low = iterator.next(), let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) else {
                    return nil
                }
                bytes.append(value)
            default: bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private func now() -> Int64 {
        self.authority.authority.clock.wallMilliseconds()
    }
}
