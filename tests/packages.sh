#!/usr/bin/env bash
# The .deb packages (packaging/build-deb.sh), one per major:
# postgresql-N-apollo-jobs_VERSION_ARCH.deb for 15 (the system's) and, when
# the versions stage built them, 16, 17 and 18.
#   1. Each .deb is made from the release build the other stages tested: for
#      15 the package directory `make install` / tests/run.sh installed from
#      ($SCRATCH/package, if its .so is the installed one), for 16-18 the
#      versions stage's ($SCRATCH/packages/pgN); otherwise built here.
#   2. Each .deb: exactly the expected files at Debian's paths for its major,
#      Depends: postgresql-N, md5sums that match, the copyright file; for
#      16-18 its .so LOADs into a server of that major (the private tree) and
#      is refused by another major's ("incompatible library").
#   3. 15: apt-get install ./postgresql-15-apollo-jobs_*.deb into the system
#      PostgreSQL 15; dpkg -L lists exactly the expected files; a scratch
#      cluster (PORT_PACKAGES) runs CREATE EXTENSION and the quick-start flow
#      (202/409/23505, getter, listing); apt-get remove --purge; the files are
#      gone.
# Touches the system: the extension's files of the system PostgreSQL 15 are
# stashed first (under $SCRATCH/packages-stash, with sha256) and put back,
# byte for byte, as soon as the package is removed (also on failure): the
# window without them is the tail of apt-get remove (printed). Refuses to run
# if postgresql-15-apollo-jobs is installed already.
# Prints: "packages: ok (...)".
source "$(dirname "$0")/lib.sh"

version=$(project_version)
arch=$(dpkg --print-architecture)
debs="$SCRATCH/debs"
stash="$SCRATCH/packages-stash"
# shellcheck disable=SC2206
MAJORS=(${APOLLO_JOBS_PACKAGES:-15 16 17 18})
[ $# -gt 0 ] && MAJORS=("$@")
t_start=$(date +%s)

apt_install binutils   # objdump: packaging/build-deb.sh reads the .so's needs
mkdir -p "$SCRATCH"; chmod 777 "$SCRATCH"
rm -rf "$debs"; mkdir -p "$debs"

# The files a package for major N must hold, from the source tree.
expected_files() {
  local n=$1 f
  {
    echo "/usr/lib/postgresql/$n/lib/apollo_jobs.so"
    echo "/usr/share/postgresql/$n/extension/apollo_jobs.control"
    echo "/usr/share/postgresql/$n/extension/apollo_jobs--$version.sql"
    for f in "$ROOT"/sql/apollo_jobs--*--*.sql; do echo "/usr/share/postgresql/$n/extension/$(basename "$f")"; done
    echo "/usr/share/doc/postgresql-$n-apollo-jobs/copyright"
    echo "/usr/share/doc/postgresql-$n-apollo-jobs/changelog.gz"
  } | LC_ALL=C sort
}

# On exit, whatever happened: the scratch clusters stop; if the 15 package
# is still installed it is removed and the stashed files are put back.
name=postgresql-15-apollo-jobs stashed=no
apt_q() { apt-get -o DPkg::Lock::Timeout=300 -y -q "$@"; }
# restore: the stashed files back in place (new inode: a running server keeps
# the library it mapped), those already equal left alone.
restore() {
  local sum f
  while read -r sum f; do
    [ -e "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sum" ] && continue
    mkdir -p "$(dirname "$f")"
    cp -p "$stash$f" "$f.apollo_jobs_new" && mv -f "$f.apollo_jobs_new" "$f"
  done <"$stash/list"
}
on_exit() {
  local c
  for c in pkgload16 pkgload17 pkgload18 pkgtest15; do cluster_stop "$c"; done
  [ "$stashed" = yes ] || return 0
  if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'ok installed$'; then
    apt_q remove --purge "$name" >/dev/null 2>&1 || true
  fi
  restore
}
trap on_exit EXIT

# 1. The packages.
declare -A SOURCE_OF=() DEB_OF=()
for n in "${MAJORS[@]}"; do
  if [ "$n" = 15 ]; then
    pkg="$SCRATCH/package"
    if cmp -s "$pkg/usr/lib/postgresql/15/lib/apollo_jobs.so" /usr/lib/postgresql/15/lib/apollo_jobs.so; then
      bash "$ROOT/packaging/build-deb.sh" --from "$pkg" --major 15 --out "$debs" >/dev/null
      SOURCE_OF[$n]="the installed build"
    else
      PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config bash "$ROOT/packaging/build-deb.sh" --out "$debs" >"$debs/build-15.log" 2>&1 \
        || { tail -n 30 "$debs/build-15.log"; fail "building the 15 package"; }
      SOURCE_OF[$n]="built here"
    fi
  else
    pkg="$SCRATCH/packages/pg$n"
    if [ -n "$(find "$pkg" -name apollo_jobs.so 2>/dev/null)" ]; then
      bash "$ROOT/packaging/build-deb.sh" --from "$pkg" --major "$n" --out "$debs" >/dev/null
      SOURCE_OF[$n]="the versions stage's build"
    else
      pgc=$(bash "$ROOT/tests/pgtrees.sh" "$n" | awk -v v="pg$n" '$1 == v {print $2}')
      [ -n "$pgc" ] || fail "no PostgreSQL $n tree"
      export PGRX_HOME="$SCRATCH/pgrx-home-$n"; mkdir -p "$PGRX_HOME"
      if ! grep -qsx "pg$n = \"$pgc\"" "$PGRX_HOME/config.toml"; then
        (cd "$ROOT" && cargo pgrx init "--pg$n" "$pgc") >"$debs/init-$n.log" 2>&1 || { tail -n 20 "$debs/init-$n.log"; fail "cargo pgrx init --pg$n"; }
      fi
      PG_CONFIG=$pgc bash "$ROOT/packaging/build-deb.sh" --out "$debs" >"$debs/build-$n.log" 2>&1 \
        || { tail -n 30 "$debs/build-$n.log"; fail "building the $n package"; }
      unset PGRX_HOME
      SOURCE_OF[$n]="built here"
    fi
  fi
  DEB_OF[$n]="$debs/postgresql-$n-apollo-jobs_${version}_${arch}.deb"
  [ -f "${DEB_OF[$n]}" ] || fail "no ${DEB_OF[$n]}"
done

# 2. What each package holds.
for n in "${MAJORS[@]}"; do
  deb=${DEB_OF[$n]} x="$debs/x$n"
  got=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $NF}' | sed 's|^\./|/|' | LC_ALL=C sort)
  if [ "$got" != "$(expected_files "$n")" ]; then
    diff <(expected_files "$n") <(echo "$got") || true
    fail "$n: the package's files are not the expected ones"
  fi
  [ "$(dpkg-deb -f "$deb" Package)" = "postgresql-$n-apollo-jobs" ] || fail "$n: Package: $(dpkg-deb -f "$deb" Package)"
  [ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "$n: Version: $(dpkg-deb -f "$deb" Version)"
  depends=$(dpkg-deb -f "$deb" Depends)
  [[ "$depends" == "postgresql-$n, "* ]] || fail "$n: Depends: $depends"
  for field in Maintainer Description Section Priority Installed-Size; do
    [ -n "$(dpkg-deb -f "$deb" "$field")" ] || fail "$n: no $field in the control file"
  done
  rm -rf "$x"; mkdir -p "$x"
  dpkg-deb -R "$deb" "$x"
  (cd "$x" && md5sum --quiet -c DEBIAN/md5sums) || fail "$n: md5sums do not match the files"
  grep -q '^License: MIT' "$x/usr/share/doc/postgresql-$n-apollo-jobs/copyright" || fail "$n: no MIT license in copyright"
  chmod -R a+rX "$x"
done

# ... and for 16-18, the .so is the one for that major: it loads into a
# server of that major, and another major's server refuses it.
loaded=()
for n in "${MAJORS[@]}"; do
  [ "$n" = 15 ] && continue
  pgc=$(bash "$ROOT/tests/pgtrees.sh" "$n" | awk -v v="pg$n" '$1 == v {print $2}')
  [ -n "$pgc" ] || fail "no PostgreSQL $n tree"
  so="$debs/x$n/usr/lib/postgresql/$n/lib/apollo_jobs.so"
  if cmp -s "$so" "$("$pgc" --pkglibdir)/apollo_jobs.so"; then same="= the tree's tested .so"; else same="built here"; fi
  saved_pgbin=$PGBIN; PGBIN=$("$pgc" --bindir)
  cluster_start "pkgload$n" "$PORT_PACKAGES"
  out=$(psql_q -At -d postgres -c "LOAD '$so'" -c "SELECT 'loaded'" 2>&1) || fail "$n: LOAD of the package's .so: $out"
  [ "$out" = loaded ] || fail "$n: LOAD: $out"
  other=""
  for m in "${MAJORS[@]}"; do [ "$m" != "$n" ] && other=$m; done
  if [ -n "$other" ]; then
    other_so="$debs/x$other/usr/lib/postgresql/$other/lib/apollo_jobs.so"
    if out=$(psql_q -At -d postgres -c "LOAD '$other_so'" 2>&1); then fail "$n: the $other package's .so loaded into a $n server"; fi
    echo "$out" | grep -qE 'incompatible library|could not load library' || fail "$n: loading the $other .so: $out"
  fi
  cluster_stop "pkgload$n"
  PGBIN=$saved_pgbin
  [ -z "$other" ] || same+="; the $other .so refused"
  loaded+=("$n ($same)")
done

# 3. apt-get install of the 15 package into the system server.
install_note="apt-get install test not run (15 not selected)"
if [[ " ${MAJORS[*]} " == *" 15 "* ]]; then
  deb=${DEB_OF[15]}
  if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'ok installed'; then
    fail "$name is installed on this machine; the install test needs it absent (apt-get remove $name)"
  fi
  mapfile -t files < <(expected_files 15)
  # A stash left by a run that was killed holds the only copies: put it back first.
  if [ -f "$stash/list" ]; then
    echo "packages: putting back the files stashed by an interrupted run"
    stashed=yes; on_exit; stashed=no
  fi
  # Stash what the system has at those paths (make install's copies).
  rm -rf "$stash"; mkdir -p "$stash"
  : >"$stash/list"
  for f in "${files[@]}"; do
    if [ -e "$f" ]; then
      mkdir -p "$stash$(dirname "$f")"; cp -p "$f" "$stash$f"
      echo "$(sha256sum "$f" | cut -d' ' -f1) $f" >>"$stash/list"
    fi
  done
  stashed=yes

  apt_q install "$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")" >"$debs/apt-install.log" 2>&1 \
    || { tail -n 20 "$debs/apt-install.log"; fail "apt-get install ./$(basename "$deb")"; }
  dpkg-query -W -f='${Status} ${Version}' "$name" | grep -qx "install ok installed $version" || fail "$name is not installed at $version"
  listed=$(dpkg -L "$name" | while IFS= read -r f; do [ -f "$f" ] && echo "$f"; done | LC_ALL=C sort)
  if [ "$listed" != "$(expected_files 15)" ]; then
    diff <(expected_files 15) <(echo "$listed") || true
    fail "dpkg -L $name does not list exactly the expected files"
  fi
  cmp -s /usr/lib/postgresql/15/lib/apollo_jobs.so "$debs/x15/usr/lib/postgresql/15/lib/apollo_jobs.so" || fail "the installed .so is not the package's"

  # The quick start, against the packaged files.
  cluster_start pkgtest15 "$PORT_PACKAGES"
  q() { psql_q -At -d postgres -c "$1"; }
  load_host postgres
  q "INSERT INTO public.orgs VALUES ('org_1'), ('org_2');
     INSERT INTO public.projects VALUES ('prj_1', 'org_1'), ('prj_2', 'org_2')"
  q "CREATE EXTENSION apollo_jobs" >/dev/null
  [ "$(q "SELECT extversion FROM pg_extension WHERE extname = 'apollo_jobs'")" = "$version" ] || fail "CREATE EXTENSION: not at $version"
  q "SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects')" >/dev/null
  first=$(q "SELECT job_id || ' ' || created FROM apollo_jobs.upsert_job_by_thermos_id('wf-123', 'project', 'org_1', 'prj_1', 'batch_revoke')")
  [[ "$first" == pj_*' true' ]] || fail "first upsert: $first"
  id=${first% *}
  [ "$(q "SELECT job_id || ' ' || created FROM apollo_jobs.upsert_job_by_thermos_id('wf-123', 'project', 'org_1', 'prj_1', 'batch_revoke')")" = "$id false" ] \
    || fail "the second upsert did not echo $id"
  state=$(q "DO \$\$ BEGIN PERFORM apollo_jobs.upsert_job_by_thermos_id('wf-123', 'project', 'org_2', 'prj_2', 'batch_revoke'); EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed -n 's/.*NOTICE: *//p')
  [ "$state" = 23505 ] || fail "another tenant's upsert of the same workflow id: '$state', not 23505"
  [ "$(q "SELECT thermos_job_id FROM apollo_jobs.job_by_id('$id', 'org_1', 'prj_1')")" = wf-123 ] || fail "job_by_id for the owner"
  [ "$(q "SELECT count(*) FROM apollo_jobs.job_by_id('$id', 'org_2', 'prj_2')")" = 0 ] || fail "job_by_id for another org"
  [ "$(q "SELECT string_agg(job_id, ',') FROM apollo_jobs.list_jobs('org_1', 'prj_1', page_size => 20)")" = "$id" ] || fail "list_jobs"
  cluster_stop pkgtest15

  # Remove the package; the files go; the stashed ones come back at once.
  t0=$(date +%s%N)
  apt_q remove --purge "$name" >"$debs/apt-remove.log" 2>&1 || { restore; tail -n 20 "$debs/apt-remove.log"; fail "apt-get remove $name"; }
  left=()
  for f in "${files[@]}"; do [ -e "$f" ] && left+=("$f"); done
  restore
  window_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ ${#left[@]} -eq 0 ] || fail "apt-get remove left ${left[*]}"
  if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'ok installed$'; then fail "$name still installed after remove"; fi
  while read -r sum f; do
    [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sum" ] || fail "$f was not restored exactly"
  done <"$stash/list"
  for f in "${files[@]}"; do
    if [ -e "$f" ] && ! grep -q " $f\$" "$stash/list"; then fail "$f exists now but did not before"; fi
  done
  stashed=no; n_stashed=$(wc -l <"$stash/list"); rm -rf "$stash"
  install_note="apt-get install into the system 15: dpkg -L exact, CREATE EXTENSION + quick start (202/409/23505, getter, listing) ok; remove --purge: files gone, $n_stashed stashed files restored by sha256 within ${window_ms} ms of the remove's start"
fi

summary=""
for n in "${MAJORS[@]}"; do summary+="${summary:+, }$(basename "${DEB_OF[$n]}") (${SOURCE_OF[$n]}, $(( $(stat -c %s "${DEB_OF[$n]}") / 1024 )) KiB)"; done
loads=""
for l in "${loaded[@]}"; do loads+="${loads:+, }$l"; done
[ -z "$loads" ] || loads="the .so of $loads loads into its major's server; "
echo "packages: ok ($summary; file lists, control fields, md5sums checked; $loads$install_note; $(( $(date +%s) - t_start ))s)"
