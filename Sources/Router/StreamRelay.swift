import Foundation
import NIOCore
import Server

/// A streamed completion on its way from replicas to a client, which the router can move
/// to another replica when the one it is on dies. The replica names the tokens of each SSE
/// event in a comment line (`APIServer.tokenIDsComment`), which the relay takes out; what it
/// passes on is otherwise the replica's bytes. Resumed elsewhere with the tokens sent so far
/// (`resume_token_ids`), the stream goes on where it stopped, the new replica's events
/// carrying the first one's `id` and `created`, so the client sees one stream with no gap
/// and no repeat. Only whole events pass: a half-written one from a dying replica is dropped.
struct StreamRelay: @unchecked Sendable {
    /// Whether a request's stream can be resumed: a streamed completion or chat completion
    /// of one prompt, one sample, no echo and no tools (a tool call's text is parsed whole).
    static func resumable(path: String, body: [String: Any]) -> Bool {
        guard path == "/v1/completions" || path == "/v1/chat/completions", body["stream"] as? Bool == true else { return false }
        if let n = body["n"] as? Int, n != 1 { return false }
        if body["echo"] as? Bool == true { return false }
        if let tools = body["tools"] as? [Any], !tools.isEmpty { return false }
        if let prompt = body["prompt"] as? [Any], prompt.contains(where: { !($0 is Int) }) { return false }
        return true
    }

    let request: [String: Any]
    /// Tokens whose events reached the client.
    private(set) var sentTokens: [Int] = []
    private(set) var done = false
    /// Whether an event with a finish reason has passed (only the closing events may follow).
    private(set) var finished = false
    /// Data events passed on to the client.
    private(set) var passedEvents = 0
    /// The client's stream's `"id":"…"` and `"created":…`, and the current replica's.
    private var clientIdentity: (id: String, created: String)?
    private var upstreamIdentity: (id: String, created: String)?
    private var pending: [UInt8] = []

    init(request: [String: Any]) { self.request = request }

    /// The body that resumes the stream on another replica (the request itself, when the
    /// client has had nothing yet).
    func resumeBody() -> ByteBuffer {
        var body = request
        if passedEvents > 0 { body["resume_token_ids"] = sentTokens }
        return ByteBuffer(bytes: (try? JSONSerialization.data(withJSONObject: body)) ?? Data())
    }

    /// A new replica's events follow; what is left of the last one's half event goes.
    mutating func switchUpstream() {
        pending.removeAll()
        upstreamIdentity = nil
    }

    /// The client's share of these bytes from the replica: its whole events, comments taken out.
    mutating func feed(_ buffer: ByteBuffer) -> ByteBuffer? {
        pending += buffer.readableBytesView
        var out = ByteBuffer()
        var start = 0
        while let end = Self.blockEnd(pending, from: start) {
            pass(pending[start..<end], to: &out)
            start = end
        }
        pending.removeFirst(start)
        return out.readableBytes > 0 ? out : nil
    }

    /// The index just past the next "\n\n", if a whole block is there.
    private static func blockEnd(_ bytes: [UInt8], from start: Int) -> Int? {
        var i = start
        while i + 1 < bytes.count {
            if bytes[i] == 10 && bytes[i + 1] == 10 { return i + 2 }
            i += 1
        }
        return nil
    }

    private mutating func pass(_ block: ArraySlice<UInt8>, to out: inout ByteBuffer) {
        var kept: [Substring] = []
        let text = String(decoding: block, as: UTF8.self)
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix(APIServer.tokenIDsComment) {
                sentTokens += line.dropFirst(APIServer.tokenIDsComment.count).split(separator: " ").compactMap { Int($0) }
            } else {
                kept.append(line)
            }
        }
        guard !kept.isEmpty else { return }
        var event = kept.joined(separator: "\n") + "\n\n"
        if event == "data: [DONE]\n\n" { done = true }
        if event.contains("\"finish_reason\":\"") { finished = true }
        if event.hasPrefix("data: ") { passedEvents += 1 }
        if event.hasPrefix("data: {"), upstreamIdentity == nil, let identity = Self.identity(event) {
            upstreamIdentity = identity
            if clientIdentity == nil { clientIdentity = identity }
        }
        if let mine = upstreamIdentity, let theirs = clientIdentity, mine != theirs {
            event = event.replacingOccurrences(of: "\"id\":\"\(mine.id)\"", with: "\"id\":\"\(theirs.id)\"")
                .replacingOccurrences(of: "\"created\":\(mine.created),", with: "\"created\":\(theirs.created),")
        }
        out.writeString(event)
    }

    private static func identity(_ event: String) -> (id: String, created: String)? {
        guard let id = event.firstMatch(of: /"id":"([^"]*)"/)?.1, let created = event.firstMatch(of: /"created":(\d+)/)?.1 else { return nil }
        return (String(id), String(created))
    }
}
