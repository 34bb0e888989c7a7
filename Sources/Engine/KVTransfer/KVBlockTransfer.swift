import Models

extension EngineCore {
    /// The layout of this engine's blocks.
    var kvLayout: KVLayout { KVLayout(layers: cache.layers, rowWidth: cache.rowWidth, blockSize: cache.blockSize, type: cache.type) }

    /// The prompt blocks that `chunks` completed for requests that export them, read out of
    /// the cache right after the step that wrote them (while their sequences hold them).
    /// Once the whole prompt is computed, a last, partial block follows with every position
    /// after the last full block but the prompt's last: the receiver then computes one token
    /// of the prompt, whose logits it needs, and nothing else. A cache that stages keys
    /// (Q4_0 keys) sends full blocks only: a partial block's staged keys stay here, and the
    /// receiver computes its positions again.
    func exportBlocks(of chunks: [ScheduledChunk]) -> [EngineEvent] {
        var events: [EngineEvent] = []
        let bs = cache.blockSize
        for chunk in chunks {
            let s = chunk.sequence, state = s.request
            guard state.request.exportsKV, s.index == 0 else { continue }
            var blocks: [KVBlock] = []
            func read(_ index: Int, positions: Int, parent: UInt64?) -> KVBlock {
                let tokens = s.tokens[(index * bs)..<(index * bs + positions)]
                let contents = [UInt8](unsafeUninitializedCapacity: cache.bytes(positions: positions)) { buffer, count in
                    cache.read(table: [s.blockTable[index]], positions: positions, into: buffer.baseAddress!)
                    count = buffer.count
                }
                return KVBlock(index: index, name: KVBlock.name(parent: parent, tokens: tokens), tokens: Array(tokens), contents: contents)
            }
            let full = min(s.computed, s.promptCount) / bs
            while state.exportedNames.count < full {
                let block = read(state.exportedNames.count, positions: bs, parent: state.exportedNames.last)
                blocks.append(block)
                state.exportedNames.append(block.name)
            }
            let rest = (s.promptCount - 1) % bs, last = (s.promptCount - 1) / bs
            if s.computed >= s.promptCount, rest > 0, !state.exportedPartialBlock, !cache.stagesKeys {
                blocks.append(read(last, positions: rest, parent: last > 0 ? state.exportedNames[last - 1] : nil))
                state.exportedPartialBlock = true
            }
            guard !blocks.isEmpty else { continue }
            statistics.exportedKVBlocks += blocks.count
            let output = GenerationOutput(index: 0, text: "", tokens: [], logprobs: [], kvBlocks: blocks, finishReason: nil, metrics: nil)
            events.append(EngineEvent(request: state.id, output: output, finished: false))
        }
        return events
    }

    /// Writes blocks another worker computed (the last may be partial) into free blocks and
    /// names them in the prefix cache, where the request that continues their prompt finds them as if it had computed
    /// them. Blocks already cached are skipped; when no block is free, the rest are dropped
    /// (that request computes them). The blocks stay free and cached, least recently used
    /// last.
    ///
    /// `earlier` blocks of the same prompt came in before (they are among the free ones now):
    /// an import takes at most the other free blocks, so it never evicts its own prompt's
    /// head to store its tail, and it frees its blocks last first, so that eviction later
    /// takes a prompt's tail before its head (a head without its tail still serves).
    func importBlocks(_ blocks: [KVBlock], earlier: Int = 0) throws -> KVImport {
        guard scheduler.blocks.prefixCaching else {
            throw EngineError.invalidConfiguration("importing KV blocks needs the prefix cache, which this engine runs without")
        }
        guard !cache.type.keys.isPerChannel else { throw EngineError.kvTransferUnsupported }
        let layout = kvLayout
        // Every block is checked before any is written, so a refused import leaves nothing behind.
        for block in blocks {
            let positions = block.tokens.count
            guard (1...layout.blockSize).contains(positions), block.contents.count == layout.bytes(positions: positions) else {
                throw EngineError.invalidConfiguration("a KV block of \(positions) tokens and \(block.contents.count) bytes does not fit blocks of \(layout)")
            }
            guard positions == layout.blockSize || !cache.stagesKeys else {
                throw EngineError.invalidConfiguration("a KV block of \(positions) tokens is partial: this cache stages its \(cache.type.keys) keys and takes whole blocks only")
            }
        }
        var result = KVImport()
        var room = max(0, scheduler.blocks.freeCount - earlier)
        var written: [Int32] = []
        defer { for b in written.reversed() { scheduler.blocks.release(b) } }
        for (i, block) in blocks.enumerated() {
            let positions = block.tokens.count
            if scheduler.blocks.isCached(block.name) {
                result.alreadyCached += 1
                continue
            }
            guard room > 0, let b = scheduler.blocks.allocate() else {
                result.dropped = blocks.count - i
                break
            }
            room -= 1
            written.append(b)
            block.contents.withUnsafeBytes { cache.write(table: [b], positions: positions, from: $0.baseAddress!) }
            if positions == layout.blockSize {
                scheduler.blocks.register(b, hash: block.name)
            } else {
                scheduler.blocks.registerPartial(b, hash: block.name)
            }
            result.imported += 1
        }
        statistics.importedKVBlocks += result.imported
        return result
    }
}
