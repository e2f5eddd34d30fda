// The Record page's microphone capture (an AudioWorklet): hands the page a quarter second
// of mono samples at a time, at the AudioContext's rate (16 kHz: the browser resamples).
"use strict";
class TingjiCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buffer = new Float32Array(4000);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        this.buffer[this.filled++] = channel[i];
        if (this.filled === this.buffer.length) {
          this.port.postMessage(this.buffer.slice());
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("tingji-capture", TingjiCapture);
