/**
 * Whether no process has this id now: files named after a process that is gone (a staging
 * directory, a partial download) are leftovers of a crash, while a live one's may be in use,
 * by another process sharing the directory.
 */
export function processGone(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
