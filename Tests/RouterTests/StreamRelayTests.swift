import NIOCore
@testable import Router
import XCTest

/// The relay between replicas and a client: token-id comments out, whole events only, a
/// resumed replica's events under the first one's id.
final class StreamRelayTests: XCTestCase {
    func text(_ b: ByteBuffer?) -> String { b.map { String(buffer: $0) } ?? "" }

    func testPassesWholeEventsWithoutTokenCommentsAndRewritesAResumedStream() {
        var relay = StreamRelay(request: ["model": "m", "prompt": "Hi", "stream": true])
        let first = "data: {\"id\":\"cmpl-1\",\"created\":100,\"choices\":[{\"text\":\"A\\\"id\\\":\\\"cmpl-2\\\"\",\"finish_reason\":null}]}\n\n"
        // Split mid-event: nothing passes until the block is whole.
        let bytes = Array((": apus-token-ids 5 6\n" + first).utf8)
        XCTAssertNil(relay.feed(ByteBuffer(bytes: bytes[..<30])))
        XCTAssertEqual(text(relay.feed(ByteBuffer(bytes: bytes[30...]))), first)
        XCTAssertEqual(relay.sentTokens, [5, 6])
        XCTAssertEqual(text(relay.feed(ByteBuffer(string: ": keep-alive\n\n"))), ": keep-alive\n\n")
        // Half an event, then the replica dies: the half is dropped.
        XCTAssertNil(relay.feed(ByteBuffer(string: ": apus-token-ids 7\ndata: {\"id\":\"cmpl-1\"")))
        XCTAssertEqual(relay.sentTokens, [5, 6])
        XCTAssertFalse(relay.finished)

        let resumed = try! JSONSerialization.jsonObject(with: Data(buffer: relay.resumeBody())) as! [String: Any]
        XCTAssertEqual(resumed["resume_token_ids"] as? [Int], [5, 6])
        relay.switchUpstream()
        let next = "data: {\"id\":\"cmpl-2\",\"created\":200,\"choices\":[{\"text\":\"B\",\"finish_reason\":\"length\"}]}\n\n"
        XCTAssertEqual(text(relay.feed(ByteBuffer(string: ": apus-token-ids 7\n" + next))),
                       "data: {\"id\":\"cmpl-1\",\"created\":100,\"choices\":[{\"text\":\"B\",\"finish_reason\":\"length\"}]}\n\n")
        XCTAssertTrue(relay.finished)
        XCTAssertEqual(relay.sentTokens, [5, 6, 7])
        XCTAssertEqual(text(relay.feed(ByteBuffer(string: "data: [DONE]\n\n"))), "data: [DONE]\n\n")
        XCTAssertTrue(relay.done)
    }

    func testNothingPassedResumesTheRequestAsItWas() {
        let relay = StreamRelay(request: ["model": "m", "prompt": "Hi", "stream": true])
        let body = try! JSONSerialization.jsonObject(with: Data(buffer: relay.resumeBody())) as! [String: Any]
        XCTAssertNil(body["resume_token_ids"])
    }

    func testOnlyOneGenerationStreamsAreResumable() {
        XCTAssertTrue(StreamRelay.resumable(path: "/v1/chat/completions", body: ["stream": true, "messages": []]))
        XCTAssertFalse(StreamRelay.resumable(path: "/v1/chat/completions", body: ["messages": []]))
        XCTAssertFalse(StreamRelay.resumable(path: "/v1/completions", body: ["stream": true, "n": 2]))
        XCTAssertFalse(StreamRelay.resumable(path: "/v1/completions", body: ["stream": true, "prompt": ["a", "b"]]))
        XCTAssertFalse(StreamRelay.resumable(path: "/v1/chat/completions", body: ["stream": true, "tools": [["type": "function"]]]))
        XCTAssertFalse(StreamRelay.resumable(path: "/v1/responses", body: ["stream": true]))
    }
}
