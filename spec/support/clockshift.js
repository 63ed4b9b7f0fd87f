// clockshift.js - preloaded into kinesis-local (NODE_OPTIONS=--require) so a
// spec can move the server's clock forward: each SIGUSR2 adds 301 s, past
// the 300 s a shard iterator lives, without the spec waiting five minutes.
'use strict';
const RealDate = Date;
let offset = 0;
class ShiftedDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(RealDate.now() + offset);
    else super(...args);
  }
  static now() { return RealDate.now() + offset; }
}
globalThis.Date = ShiftedDate;
// cats-effect's real-time clock on Node is performance.timeOrigin + now()
const realPerfNow = performance.now.bind(performance);
performance.now = () => realPerfNow() + offset;
process.on('SIGUSR2', () => { offset += 301000; });
