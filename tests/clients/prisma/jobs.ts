import { Prisma, PrismaClient } from './generated/client.ts';

export type JobClass = 'org' | 'project';

export interface NewJob {
  thermosJobId: string;
  jobClass: JobClass;
  orgId: string;
  projectId: string | null; // null for an org job
  jobType: string;
}

/** The client, or the `tx` of an interactive `prisma.$transaction(async (tx) => ...)`. */
export type Db = PrismaClient | Prisma.TransactionClient;

/** A row of upsert_job_by_thermos_id. */
export interface UpsertRow {
  job_id: string;
  created: boolean; // true -> 202 Accepted, false -> 409 Conflict (same job, same id)
}

/** A row of job_by_id and list_jobs. */
export interface JobRow {
  job_id: string;
  job_class: JobClass;
  org_id: string;
  project_id: string | null;
  job_type: string;
  thermos_job_id: string;
  created_at: Date;
}

export async function upsertJob(db: Db, input: NewJob): Promise<UpsertRow> {
  // sql: upsert_job
  const rows = await db.$queryRaw<UpsertRow[]>`SELECT u.job_id, u.created
FROM apollo_jobs.upsert_job_by_thermos_id(
    thermos_job_id => ${input.thermosJobId}, job_class => ${input.jobClass}, org_id => ${input.orgId}, project_id => ${input.projectId}, job_type => ${input.jobType}
) AS u`;
  return rows[0]; // always exactly one row
}

/** The job if it belongs to (orgId, projectId); null -> 404. */
export async function jobById(db: Db, jobId: string, orgId: string, projectId: string | null): Promise<JobRow | null> {
  // sql: job_by_id
  const rows = await db.$queryRaw<JobRow[]>`SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type,
       j.thermos_job_id, j.created_at
FROM apollo_jobs.job_by_id(job_id => ${jobId}, org_id => ${orgId}, project_id => ${projectId}) AS j`;
  return rows[0] ?? null;
}

export interface ListQuery {
  orgId: string;
  projectId?: string | null; // one project's jobs; else the org's own jobs
  includeProjectJobs?: boolean; // with the org's own, every visible project's jobs (not with projectId)
  jobType?: string | null;
  startingAfter?: string | null; // next_cursor of the previous page
  limit?: number; // an integer, 1..1000 (the extension checks the range: 22023)
}

/** One page of GET /v1/jobs, newest first (created_at DESC, job_id DESC). */
export interface JobPage {
  data: JobRow[];
  has_more: boolean;
  next_cursor: string | null;
}

/**
 * has_more is true when the page is full, and next_cursor is then its last
 * job_id (the extension's rule: a page shorter than page_size is the last);
 * when the jobs fill the last page exactly, the page after it is empty. A bad,
 * foreign or unknown cursor and a limit out of range are 22023 (400).
 */
export async function listJobs(db: Db, q: ListQuery): Promise<JobPage> {
  const limit = q.limit ?? 50;
  if (!Number.isSafeInteger(limit)) throw new RangeError('limit must be an integer'); // a 400 of the API's own
  // sql: list_jobs
  const rows = await db.$queryRaw<JobRow[]>`SELECT l.job_id, l.job_class, l.org_id, l.project_id, l.job_type,
       l.thermos_job_id, l.created_at
FROM apollo_jobs.list_jobs(
    org_id => ${q.orgId}, project_id => ${q.projectId ?? null}, include_project_jobs => ${q.includeProjectJobs ?? false}, job_type => ${q.jobType ?? null},
    starting_after => ${q.startingAfter ?? null}, page_size => ${limit}::integer
) AS l`;
  const hasMore = rows.length === limit;
  return { data: rows, has_more: hasMore, next_cursor: hasMore ? rows[rows.length - 1].job_id : null };
}

export const STATUS_BY_SQLSTATE: Record<string, number> = {
  '22003': 400, '22004': 400, '22021': 400, '22023': 400, '22P02': 400, '23514': 400,
  '23503': 404, '23505': 409,
  '40001': 503, '40P01': 503, '25006': 503, '55P03': 503, '57014': 503,
  '57P01': 503, '57P02': 503, '57P03': 503, '55000': 503,
  '0A000': 500, '27000': 500, '42501': 500, '58000': 500,
};
export const STATUS_BY_SQLSTATE_CLASS: Record<string, number> = { '08': 503 };
export const RETRY_SQLSTATES = ['40001', '40P01'];
// No SQLSTATE, still a 503: what the driver adapter says of a server it cannot
// reach over TCP or that closed the connection; a unix socket with no server
// behind it comes as node's own error code.
const UNAVAILABLE_KINDS = ['DatabaseNotReachable', 'ConnectionClosed', 'SocketTimeout'];
const UNAVAILABLE_NODE_CODES = ['ENOENT'];

type DriverAdapterErrorMeta = {
  driverAdapterError?: { cause?: { kind?: string; originalCode?: string; originalMessage?: string } };
};

/** The driver adapter's account of a failed query: its kind and, for the server's errors, SQLSTATE and message. */
function causeOf(e: unknown) {
  if (!(e instanceof Prisma.PrismaClientKnownRequestError)) return undefined;
  return (e.meta as DriverAdapterErrorMeta | undefined)?.driverAdapterError?.cause;
}

/** The SQLSTATE of a failed query: $queryRaw's P2010 and a model query's P2002, P2003, P2039, ... alike. */
export function sqlstateOf(e: unknown): string | undefined {
  return causeOf(e)?.originalCode;
}

export function httpStatusOf(e: unknown): number {
  if (UNAVAILABLE_KINDS.includes(causeOf(e)?.kind ?? '')) return 503;
  if (e instanceof Prisma.PrismaClientKnownRequestError && UNAVAILABLE_NODE_CODES.includes(e.code)) return 503;
  const sqlstate = sqlstateOf(e);
  if (sqlstate === undefined) return 500;
  return STATUS_BY_SQLSTATE[sqlstate] ?? STATUS_BY_SQLSTATE_CLASS[sqlstate.slice(0, 2)] ?? 500;
}

/** POST /v1/jobs */
export async function createJob(prisma: PrismaClient, input: NewJob, maxAttempts = 3) {
  for (let attempt = 1; ; attempt++) {
    try {
      const { job_id, created } = await upsertJob(prisma, input);
      return { status: created ? 202 : 409, body: { job_id, created } };
    } catch (e) {
      if (RETRY_SQLSTATES.includes(sqlstateOf(e) ?? '') && attempt < maxAttempts) {
        await new Promise((r) => setTimeout(r, 10 * 2 ** attempt * Math.random()));
        continue; // a new statement, a new snapshot: it finds the winner's job
      }
      const status = httpStatusOf(e);
      // the server's own message (e.message wraps it in Prisma's "Invalid `prisma.$queryRaw()` invocation: ...")
      const message = causeOf(e)?.originalMessage;
      const body = status === 400 && message !== undefined ? { error: 'invalid_argument', message } : { error: String(status) };
      return { status, body, headers: status === 503 ? { 'Retry-After': '1' } : {} };
    }
  }
}
