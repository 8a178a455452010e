import { defineConfig, env } from 'prisma/config';

export default defineConfig({
  schema: 'schema.prisma',
  // for the CLI's database commands (migrate, db pull); the client connects
  // through its driver adapter instead
  datasource: { url: env('DATABASE_URL') },
  // apollo_jobs.jobs is the extension's (create_jobs_table): Migrate leaves it alone
  experimental: { externalTables: true },
  tables: { external: ['apollo_jobs.jobs'] },
});
