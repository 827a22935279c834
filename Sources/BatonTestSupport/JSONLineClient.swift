import Foundation

/// A test's view of a connection: send a request as JSON, get the reply as a ``ReplyObject``.
public final class JSONLineClient {
    public let connection: LineConnection
    private var nextID = 0

    public init(connection: LineConnection) {
        self.connection = connection
    }

    /// Sends one request and reads the next reply line.
    @discardableResult
    public func request(_ fields: [String: Any]) throws -> ReplyObject {
        try self.send(fields)
        return try self.readReply()
    }

    /// Sends one request without waiting for its reply.
    public func send(_ fields: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
        try self.connection.send(String(decoding: data, as: UTF8.self) + "\n")
    }

    /// Sends a raw line (a newline is added) and reads the next reply.
    @discardableResult
    public func requestRaw(_ line: String) throws -> ReplyObject {
        try self.connection.send(line + "\n")
        return try self.readReply()
    }

    public func readReply() throws -> ReplyObject {
        try ReplyObject(line: try self.connection.readLine())
    }

    // MARK: Shorthands for the common ops

    /// Enqueues a job and returns its id.
    public func enqueue(queue: String = "default", payload: Any = [String: Any](), _ extra: [String: Any] = [:]) throws -> Int {
        var fields: [String: Any] = ["op": "enqueue", "queue": queue, "payload": payload]
        fields.merge(extra) { $1 }
        let reply = try self.request(fields)
        guard reply.ok, let id = reply.int("job") else { throw TestServerError("enqueue failed: \(reply.line)") }
        return id
    }

    /// Claims a job; `nil` when none came.
    public func claim(queues: [String] = ["default"], _ extra: [String: Any] = [:]) throws -> ClaimedJob? {
        var fields: [String: Any] = ["op": "claim", "queues": queues]
        fields.merge(extra) { $1 }
        let reply = try self.request(fields)
        guard reply.ok else { throw TestServerError("claim failed: \(reply.line)") }
        return reply.object("job").map(ClaimedJob.init)
    }

    /// A fenced request on a claimed job.
    @discardableResult
    public func fenced(_ op: String, _ job: ClaimedJob, _ extra: [String: Any] = [:]) throws -> ReplyObject {
        var fields: [String: Any] = ["op": op, "job": job.id, "token": job.token]
        fields.merge(extra) { $1 }
        return try self.request(fields)
    }

    /// Waits (up to 10 s) until the server holds `count` parked claims, so a test can act
    /// on a claim it knows is waiting.
    public func waitForParkedClaims(_ count: Int) throws {
        for _ in 0..<500 {
            if try self.request(["op": "stats"]).int("parked_claims") == count { return }
            usleep(20_000)
        }
        throw TestServerError("the server never held \(count) parked claims")
    }

    /// The whole job, as `get` returns it.
    public func get(_ id: Int) throws -> [String: Any] {
        let reply = try self.request(["op": "get", "job": id])
        guard let job = reply.object("job") else { throw TestServerError("get failed: \(reply.line)") }
        return job
    }
}

/// A job as `claim` returned it.
public struct ClaimedJob {
    public var fields: [String: Any]

    public init(_ fields: [String: Any]) {
        self.fields = fields
    }

    public var id: Int { self.fields["id"] as? Int ?? -1 }
    public var token: Int { self.fields["token"] as? Int ?? -1 }
    public var attempt: Int { self.fields["attempt"] as? Int ?? -1 }
    public var queue: String { self.fields["queue"] as? String ?? "" }
    public var payload: Any? { self.fields["payload"] }
    public var checkpoint: Any? { self.fields["checkpoint"].flatMap { $0 is NSNull ? nil : $0 } }
}

/// One reply line, parsed.
public struct ReplyObject: CustomStringConvertible {
    public let line: String
    public let fields: [String: Any]

    public init(line: String) throws {
        self.line = line
        guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw TestServerError("reply is not a JSON object: \(line)")
        }
        self.fields = object
    }

    public var ok: Bool { self.fields["ok"] as? Bool ?? false }
    /// The error code of a failed reply.
    public var errorCode: String? { (self.fields["error"] as? [String: Any])?["code"] as? String }
    public var errorMessage: String? { (self.fields["error"] as? [String: Any])?["message"] as? String }
    /// The job's state, as a refusal about one job reports it.
    public var errorState: String? { (self.fields["error"] as? [String: Any])?["state"] as? String }

    public func int(_ key: String) -> Int? { self.fields[key] as? Int }
    public func string(_ key: String) -> String? { self.fields[key] as? String }
    public func bool(_ key: String) -> Bool? { self.fields[key] as? Bool }
    public func object(_ key: String) -> [String: Any]? { self.fields[key] as? [String: Any] }
    public func isNull(_ key: String) -> Bool { self.fields[key] is NSNull }

    public var description: String { self.line }
}
