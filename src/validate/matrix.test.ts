import { describe, expect, it } from 'vitest';
import { socketSamplesOf } from './matrix.ts';

// `ss -tmiHn state established` on this host during a localhost transfer to port 47853 (trimmed), with an
// unrelated connection after it.
const SS = [
  '0      0      127.0.0.1:47853 127.0.0.1:41640',
  '\t skmem:(r0,rb33554432,t0,tb3939840,f0,w0,o0,bl0,d1) bbr wscale:10,10 rto:204 rtt:0.014/0.007 rcv_rtt:12.385 rcv_space:11928135 rcv_ssthresh:33026038 minrtt:0.014 snd_wnd:65536',
  '0      2621440 127.0.0.1:41640 127.0.0.1:47853',
  '\t skmem:(r0,rb131072,t2686976,tb4194304,f0,w0,o0,bl0,d0) bbr wscale:10,10 rto:204 rtt:0.016/0.002 bytes_acked:174653441 rcv_space:65495 snd_wnd:33026048',
  '1048576 0      10.0.0.2:22 10.0.0.9:50000',
  '\t skmem:(r1048576,rb6291456,t0,tb87040,f0,w0,o0,bl0,d0) cubic rcv_space:14600',
  '',
].join('\n');

describe('socketSamplesOf', () => {
  it("reads each side's queues and buffers of the connections to the port, and nothing else", () => {
    expect(socketSamplesOf(150, SS, 47853)).toEqual([
      { atMs: 150, side: 'dst', port: 41640, recvQ: 0, sendQ: 0, r: 0, rb: 33554432, t: 0, tb: 3939840, rcvSpace: 11928135 },
      { atMs: 150, side: 'src', port: 41640, recvQ: 0, sendQ: 2621440, r: 0, rb: 131072, t: 2686976, tb: 4194304, rcvSpace: 65495 },
    ]);
  });
  it('gives nothing for output without the port, or empty output', () => {
    expect(socketSamplesOf(0, SS, 4444)).toEqual([]);
    expect(socketSamplesOf(0, '', 47853)).toEqual([]);
  });
});
