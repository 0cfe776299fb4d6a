import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadlineIn, within } from '../core/deadline.js';

describe('a deadline shared by the stages of one piece of work', () => {
  it('gives each stage what the ones before left', async () => {
    const deadline = deadlineIn(300);
    assert.ok(deadline.remainingMs() > 200);
    await sleep(350);
    assert.equal(deadline.remainingMs(), 0);
    assert.equal(deadline.signal.aborted, true);
  });

  it('answers late() at the limit while a stage without a limit of its own still runs, and drops its outcome', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      // The limit passing while the stage runs, and passed before it was raced at all (then no
      // race ever listens to the stage: only within's own catch does).
      const passed = deadlineIn(1);
      await sleep(20);
      for (const deadline of [deadlineIn(100), passed]) {
        let finish!: (error: Error) => void;
        const stage = new Promise<string>((_resolve, reject) => (finish = reject));
        await assert.rejects(within(deadline, stage, () => new Error('late')), /late/);
        // The stage fails after the answer: nothing is left unhandled.
        finish(new Error('the download failed afterwards'));
      }
      await sleep(50);
      assert.deepEqual(rejections, []);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });

  it('answers the work when it ends first, and late() at once when the limit has passed', async () => {
    assert.equal(await within(deadlineIn(5_000), Promise.resolve('answer'), () => new Error('late')), 'answer');
    await assert.rejects(within(deadlineIn(5_000), Promise.reject(new Error('its own failure')), () => new Error('late')), /its own failure/);
    const passed = deadlineIn(1);
    await sleep(20);
    await assert.rejects(within(passed, Promise.resolve('answer'), () => new Error('late')), /late/);
  });
});
