import Engine
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1

/// Disaggregated prefill and decode (DistServe, Splitwise): a prefill worker computes a
/// prompt and streams its full KV blocks as they are computed; a decode worker takes them
/// into its prefix cache, where the request that follows finds them. A router carries the
/// blocks from one to the other (`apus router --prefill ... --decode ...`).
extension APIServer {
    /// On a completion or chat completion request: answer with the prompt's KV blocks
    /// (`KVBlockWire`) instead of a completion.
    public static let kvExportHeader = "X-Apus-KV-Export"
    public static let kvImportPath = "/kv/import"
    public static let kvContentType = KVBlockWire.contentType

    /// Computes the prompt of a parsed generation request (one token generated, as vLLM's
    /// prefill instance does) and streams each full block of it once it is in the cache.
    func exportKV(_ prepared: PreparedGeneration, model: ServedModel, log: inout RequestLog) throws -> Response {
        guard configuration.role.exports else {
            throw APIError.invalidRequest("this worker runs --role decode, which does not export KV blocks")
        }
        guard prepared.requests.count == 1 else {
            throw APIError.invalidRequest("a KV export computes one prompt; this request has \(prepared.requests.count)", param: "prompt")
        }
        var request = prepared.requests[0]
        request.parameters.maxTokens = 1
        request.samples = 1
        request.logprobs = nil
        request.promptLogprobs = nil
        request.exportsKV = true
        // On a prefill worker, shortest prompt first within the client's priority: short
        // prompts pass a long one instead of waiting the whole of it (head-of-line blocking),
        // and the long one takes what they leave of each step. (A worker that also serves
        // ordinary requests keeps their order: its priorities stay the clients'.)
        if configuration.role == .prefill {
            request.priority = (max(-(1 << 20), min(request.priority, 1 << 20)) << 24) + min(request.prompt.count, (1 << 24) - 1)
        }
        let stream = try submit([request], to: model)[0]
        let header = KVBlockWire.header(model.engine.kvLayout, model: model.kvIdentity)
        var headers = HTTPFields()
        headers[.contentType] = KVBlockWire.contentType
        log.streamed = true
        let idleSeconds = UInt64(configuration.keepAliveSeconds * 1e9)
        return Response(status: .ok, headers: headers, body: ResponseBody { [self, log] writer in
            var log = log
            log.status = 200
            defer { finish(log) }
            // The engine's outputs and, while none comes, an idle record every keep-alive
            // interval: a prompt waiting its turn behind others does not look like a dead sender.
            let (events, sink) = AsyncStream<ExportEvent>.makeStream()
            let producer = Task {
                do {
                    for try await output in stream { sink.yield(.output(output)) }
                    sink.yield(.done)
                } catch {
                    sink.yield(.failed(error))
                }
                sink.finish()
            }
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: idleSeconds)
                    if !Task.isCancelled { sink.yield(.idle) }
                }
            }
            defer {
                producer.cancel()
                ticker.cancel()
            }
            try await writer.write(ByteBuffer(bytes: header))
            var count = 0
            loop: for await event in events {
                switch event {
                case .idle:
                    try await writer.write(ByteBuffer(bytes: KVBlockWire.idle()))
                case .failed(let error):
                    log.note = "cut: \(error)"
                    throw error
                case .done:
                    break loop
                case .output(let output):
                    for block in output.kvBlocks {
                        try await writer.write(ByteBuffer(bytes: KVBlockWire.record(block)))
                        count += 1
                    }
                    if let m = output.metrics {
                        metrics.record(m)
                        log.metrics = m
                    }
                }
            }
            try await writer.write(ByteBuffer(bytes: KVBlockWire.end(blocks: count)))
            try await writer.finish(nil)
            log.note = "exported \(count) KV blocks"
        })
    }

    private enum ExportEvent: Sendable {
        case output(GenerationOutput)
        case idle
        case done
        case failed(any Error)
    }

    /// Reads a stream of KV blocks and imports them into the named model's cache (`?model=`,
    /// default the first) as they arrive, one import at a time and in order: blocks decoded
    /// while an import waits for the engine's next step go in with the one after, so the
    /// stream never waits a step per block, and no more than that is held (the sender waits
    /// meanwhile). The stream is bounded by the cache (no more blocks than it holds), not by
    /// the body limit.
    func importKV(_ request: Request, channel: any Channel, log: inout RequestLog) async throws -> Response {
        guard configuration.role.imports else {
            throw APIError(.forbidden, "this worker runs --role prefill, which does not import KV blocks", type: "invalid_request_error")
        }
        let model = try await lease(request.uri.queryParameters.get("model"), log: &log)
        let engine = model.engine
        var decoder = KVBlockWire.Decoder(layout: engine.kvLayout, model: model.kvIdentity, maxBlocks: engine.kvBlockCount)
        var result = KVImport()
        var importing: Task<KVImport, Error>?
        defer { importing?.cancel() }
        var decoded: [KVBlock] = []
        func add(_ part: KVImport) {
            result.imported += part.imported
            result.alreadyCached += part.alreadyCached
            result.dropped += part.dropped
        }
        do {
            for try await buffer in request.body {
                decoded += try buffer.withUnsafeReadableBytes { try decoder.feed($0) }
                guard !decoded.isEmpty else { continue }
                if let previous = importing { add(try await previous.value) }
                let blocks = decoded, earlier = result.imported
                decoded = []
                importing = Task { try await engine.importKV(blocks, earlier: earlier) }
            }
            try decoder.finish()
            if let previous = importing { add(try await previous.value) }
            importing = nil
        } catch let error as KVTransferError {
            throw APIError.invalidRequest(error.description)
        } catch let error as APIError {
            throw error
        } catch let error as EngineError {
            throw APIError(.conflict, error.description, type: "invalid_request_error")
        } catch let error as HTTPParserError {
            throw APIError.invalidRequest("malformed HTTP request body: \(error)")
        } catch {
            throw ClientDeparted()
        }
        if !channel.isActive { throw ClientDeparted() }
        log.note = "imported \(result.imported) KV blocks (\(result.alreadyCached) already cached, \(result.dropped) dropped)"
        return Self.json(.ok, ["imported_blocks": result.imported, "cached_blocks": result.alreadyCached, "dropped_blocks": result.dropped,
                               "block_size": engine.kvLayout.blockSize])
    }
}
