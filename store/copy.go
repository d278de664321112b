package store

// Copy moves every row of one database into another, empty and migrated
// one, SQLite to PostgreSQL or back, and proves it did: each table's rows
// are counted and checksummed in the source as they are read and in the
// target once committed, and the two must agree.
//
// What is copied: every table of allModels() and the secrets (the list
// cursors' key), with every column the model knows, value for value:
// hashes, keys and secrets as stored (encrypted ones stay encrypted; copy
// never decrypts), queued emails and webhook messages with their states,
// attempts, claims and due times. The version table of the migrations
// (goose_db_version) is not copied: the target has its own, from migrate.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// migrationsTable is the migrations' version table: not data, never copied.
const migrationsTable = "goose_db_version"

// colKind is how a column's values are read, written and checksummed:
// the Go type of its model field, the same on both databases whatever
// type each gives the column.
type colKind int

const (
	kindInt colKind = iota
	kindString
	kindBytes
	kindTime
	kindBool
	kindFloat
)

type copyColumn struct {
	name string
	kind colKind
}

// copyTable is one table Copy copies: its columns in model order and its
// primary key, the order rows are read, written and checksummed in.
type copyTable struct {
	name    string
	columns []copyColumn
	pk      []copyColumn
	serial  bool // a single integer key a PostgreSQL sequence hands out
}

// copyTables are the tables Copy copies, parents before children (the
// foreign keys are checked on every insert on PostgreSQL).
var copyTables = sync.OnceValue(func() []copyTable {
	var tables []copyTable
	cache := &sync.Map{}
	for _, m := range append(allModels(), &secret{}) {
		s, err := schema.Parse(m, cache, schema.NamingStrategy{})
		if err != nil {
			panic(fmt.Sprintf("copy: parse model %T: %v", m, err)) // the models are this package's: cannot fail
		}
		t := copyTable{name: s.Table}
		for _, f := range s.Fields {
			if f.DBName == "" {
				continue // a relation, not a column
			}
			c := copyColumn{name: f.DBName, kind: kindOf(f.FieldType)}
			t.columns = append(t.columns, c)
			if f.PrimaryKey {
				t.pk = append(t.pk, c)
			}
		}
		t.serial = len(t.pk) == 1 && t.pk[0].kind == kindInt && s.PrioritizedPrimaryField != nil && s.PrioritizedPrimaryField.AutoIncrement
		tables = append(tables, t)
	}
	return tables
})

func kindOf(t reflect.Type) colKind {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[time.Time]():
		return kindTime
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return kindBytes
	case t.Kind() == reflect.String:
		return kindString
	case t.Kind() == reflect.Bool:
		return kindBool
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return kindFloat
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return kindInt
	}
	panic(fmt.Sprintf("copy: no column kind for %s", t)) // a model field of a new type: add it above
}

// CopyOptions tune Copy.
type CopyOptions struct {
	// BatchSize is how many rows one statement reads or writes; 0: 1,000.
	BatchSize int
	// Progress, when set, is told after every batch of a table how many of
	// its rows are copied, and once more when the table is done.
	Progress func(p CopyProgress)
}

// CopyProgress is how far the copy of one table is.
type CopyProgress struct {
	Table        string
	Copied, Rows int64
	Done         bool
	Elapsed      time.Duration // since the table started
}

// TableCheck is one table's rows and checksums in source and target.
type TableCheck struct {
	Table                  string
	SourceRows, TargetRows int64
	// SourceSum and TargetSum are hex SHA-256 digests of the table's rows
	// in primary-key order, in the canonical encoding of rowHasher.
	SourceSum, TargetSum string
}

// Match tells whether the target holds what was read from the source.
func (c TableCheck) Match() bool {
	return c.SourceRows == c.TargetRows && c.SourceSum == c.TargetSum
}

// CopyReport is what Copy did.
type CopyReport struct {
	Tables []TableCheck
	Rows   int64
}

// CheckSchemaVersions refuses a copy between schemas of different
// versions, saying which side to migrate; version 0 is a database no
// migration has run on.
func CheckSchemaVersions(source, target int64) error {
	switch {
	case target == 0:
		return errors.New("the target is not migrated: run `controlplane migrate --db TARGET` first (nothing was copied)")
	case source > target:
		return fmt.Errorf("the source's schema (version %d) is newer than the target's (version %d): run `controlplane migrate --db TARGET` with the binary that made the source (nothing was copied)", source, target)
	case source < target:
		return fmt.Errorf("the source's schema (version %d) is older than the target's (version %d): run `controlplane migrate --db SOURCE` first, with the servers of the source stopped (nothing was copied)", source, target)
	}
	return nil
}

// CheckIdle refuses a SQLite database that a process has open (serve, a
// worker, a command: see dbLock); PostgreSQL is not checked here (Copy
// refuses a source whose messages are claimed).
func CheckIdle(dsn string) error {
	if IsPostgresDSN(dsn) {
		return nil
	}
	path, err := sqlitePath(dsn)
	if err != nil {
		return err
	}
	if err := mustExist(path, "SQLite database"); err != nil {
		return err
	}
	lock, err := lockDatabase(path, true)
	if err != nil {
		return lockError(path, err)
	}
	return lock.release()
}

// Copy copies every row of from into to, which must be migrated to the
// same schema version and hold no data (the cursor key migrate makes is
// replaced by the source's). It reads the source in one snapshot and
// writes the target in one transaction, keyset batches by primary key: a
// failure leaves the target as it was. On PostgreSQL it then moves every
// sequence past the copied ids. Last it reads the target back and checks
// every table's rows and checksum against what was read.
//
// It refuses a source with a message claimed for delivery now (a mail or
// webhook worker is running on it): a copy is meant to move a stopped
// deployment, so that its queued messages are delivered once, from the
// target.
func Copy(ctx context.Context, from, to *Store, opts CopyOptions) (CopyReport, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	if err := checkCopy(ctx, from, to); err != nil {
		return CopyReport{}, err
	}
	var report CopyReport
	sums := map[string]*tableSum{}
	err := from.readSnapshot(ctx, func(src *gorm.DB) error {
		return to.copyTx(ctx, func(dst *gorm.DB) error {
			for _, t := range copyTables() {
				sum, err := copyRows(ctx, src, dst, from.dialect, to.dialect, t, opts)
				if err != nil {
					return fmt.Errorf("copy %s (nothing was copied): %w", t.name, err)
				}
				sums[t.name] = sum
			}
			if to.dialect == Postgres {
				return fixSequences(ctx, dst)
			}
			return nil
		})
	})
	if err != nil {
		return CopyReport{}, err
	}
	err = to.readSnapshot(ctx, func(tx *gorm.DB) error {
		for _, t := range copyTables() {
			got, err := checksumTable(ctx, tx, to.dialect, t, opts.BatchSize)
			if err != nil {
				return err
			}
			want := sums[t.name]
			report.Tables = append(report.Tables, TableCheck{Table: t.name, SourceRows: want.rows, TargetRows: got.rows,
				SourceSum: want.hex(), TargetSum: got.hex()})
			report.Rows += got.rows
		}
		return nil
	})
	if err != nil {
		return report, fmt.Errorf("check the target: %w", err)
	}
	var bad []string
	for _, c := range report.Tables {
		if !c.Match() {
			bad = append(bad, c.Table)
		}
	}
	if len(bad) > 0 {
		return report, fmt.Errorf("the target differs from the source in %s after the copy", strings.Join(bad, ", "))
	}
	return report, nil
}

// copyTx runs fn in one write transaction, however long it takes (no
// write timeout: a copy of millions of rows is one transaction).
func (s *Store) copyTx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	if s.committer != nil {
		return s.committer.Do(ctx, fn)
	}
	return s.write.WithContext(ctx).Transaction(fn)
}

// checkCopy refuses, before anything is written: different schema
// versions, a target that is not migrated or not empty, tables or columns
// this binary does not know, a source being delivered from.
func checkCopy(ctx context.Context, from, to *Store) error {
	sv, err := from.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("read the source's schema version: %w", err)
	}
	tv, err := to.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("read the target's schema version: %w", err)
	}
	if err := CheckSchemaVersions(sv, tv); err != nil {
		return err
	}
	for _, side := range []struct {
		name string
		st   *Store
	}{{"source", from}, {"target", to}} {
		if err := checkColumns(ctx, side.st, side.name); err != nil {
			return err
		}
	}
	var full []string
	for _, t := range copyTables() {
		if t.name == (secret{}).TableName() {
			continue // migrate makes the cursor key: replaced by the source's
		}
		var n int64
		if err := to.read.WithContext(ctx).Raw(`SELECT COUNT(*) FROM (SELECT 1 FROM ` + quote(t.name) + ` LIMIT 1) t`).Scan(&n).Error; err != nil {
			return fmt.Errorf("read the target's %s: %w", t.name, err)
		}
		if n > 0 {
			full = append(full, t.name)
		}
	}
	if len(full) > 0 {
		return fmt.Errorf("the target is not empty (rows in %s): copy fills only an empty database, made by `controlplane migrate` and never served (nothing was copied)", strings.Join(full, ", "))
	}
	now := from.now()
	for _, table := range []string{"outbox_messages", "webhook_messages"} {
		var n int64
		if err := from.read.WithContext(ctx).Raw(`SELECT COUNT(*) FROM `+table+` WHERE claimed_until > ?`, now).Scan(&n).Error; err != nil {
			return fmt.Errorf("read the source's %s: %w", table, err)
		}
		if n > 0 {
			return fmt.Errorf("the source is delivering: %d of its %s are claimed by a running worker; stop every serve, mail-worker and webhook-worker of the source first, and copy again once their claims have ended (nothing was copied)", n, table)
		}
	}
	return nil
}

// checkColumns refuses a database missing a table or a column the models
// have, or with a column they do not have (which copy would leave behind).
func checkColumns(ctx context.Context, st *Store, side string) error {
	m := st.read.WithContext(ctx).Migrator()
	tables, err := m.GetTables()
	if err != nil {
		return fmt.Errorf("list the %s's tables: %w", side, err)
	}
	for _, name := range tables {
		known := name == migrationsTable || strings.HasPrefix(name, "sqlite_") || slices.ContainsFunc(copyTables(), func(t copyTable) bool { return t.name == name })
		if !known {
			// Copying the rest would leave its rows behind, silently.
			return fmt.Errorf("the %s has a table %s this binary does not copy: copy with the release that made it (nothing was copied)", side, name)
		}
	}
	for _, t := range copyTables() {
		if !m.HasTable(t.name) {
			return fmt.Errorf("the %s has no table %s: run `controlplane migrate` on it first (nothing was copied)", side, t.name)
		}
		types, err := m.ColumnTypes(t.name)
		if err != nil {
			return fmt.Errorf("read the %s's columns of %s: %w", side, t.name, err)
		}
		have := map[string]bool{}
		for _, ct := range types {
			have[ct.Name()] = true
		}
		for _, c := range t.columns {
			if !have[c.name] {
				return fmt.Errorf("the %s's table %s has no column %s: run `controlplane migrate` on it first (nothing was copied)", side, t.name, c.name)
			}
			delete(have, c.name)
		}
		if len(have) > 0 {
			extra := slices.Sorted(maps.Keys(have))
			return fmt.Errorf("the %s's table %s has a column %s this binary does not know: copy with the release that made it (nothing was copied)", side, t.name, strings.Join(extra, ", "))
		}
	}
	return nil
}

// quote quotes an identifier for both databases (the names are the
// models', but quoted all the same).
func quote(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

// orderBy is the table's primary-key order, the same on both databases:
// text keys in byte order (PostgreSQL's "C" collation is SQLite's BINARY),
// so that both read the rows in one order and their checksums compare.
func (t copyTable) orderBy(d Dialect) []string {
	cols := make([]string, len(t.pk))
	for i, c := range t.pk {
		cols[i] = quote(c.name)
		if c.kind == kindString && d == Postgres {
			cols[i] += ` COLLATE "C"`
		}
	}
	return cols
}

// selectPage is the statement reading the page of up to limit rows after
// the key of the previous page's last row (none for the first page).
func (t copyTable) selectPage(d Dialect, first bool) string {
	cols := make([]string, len(t.columns))
	for i, c := range t.columns {
		cols[i] = quote(c.name)
	}
	order := t.orderBy(d)
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + quote(t.name)
	if !first {
		q += " WHERE (" + strings.Join(order, ", ") + ") > (" + placeholders(d, 0, len(t.pk)) + ")"
	}
	return q + " ORDER BY " + strings.Join(order, ", ") + " LIMIT " + placeholder(d, len(t.pk)*boolInt(!first)+1)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// placeholder is the n-th (1-based) parameter of a statement.
func placeholder(d Dialect, n int) string {
	if d == Postgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// placeholders are count parameters after the first skip, comma-separated.
func placeholders(d Dialect, skip, count int) string {
	var b strings.Builder
	for i := range count {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(placeholder(d, skip+i+1))
	}
	return b.String()
}

// tableSum is a table's row count and checksum as its rows go by.
type tableSum struct {
	rows int64
	h    hash.Hash
	buf  []byte
}

func newTableSum() *tableSum { return &tableSum{h: sha256.New()} }

func (s *tableSum) hex() string { return hex.EncodeToString(s.h.Sum(nil)) }

// add adds one row (values normalised by readPage) to the checksum. The
// encoding is canonical, the same for a row read from either database:
// each value a tag and its bytes, lengths before strings and bytes (so
// values cannot run into each other), integers as 8 bytes, times in UTC
// to the microsecond (normalise truncates them: PostgreSQL's precision),
// NULL its own tag (not an empty string or zero).
func (s *tableSum) add(row []any) {
	b := append(s.buf[:0], 'R')
	for _, v := range row {
		switch v := v.(type) {
		case nil:
			b = append(b, 'N')
		case int64:
			b = binary.BigEndian.AppendUint64(append(b, 'I'), uint64(v)) //nolint:gosec // G115: the bits, not the value
		case string:
			b = append(binary.AppendUvarint(append(b, 'S'), uint64(len(v))), v...)
		case []byte:
			b = append(binary.AppendUvarint(append(b, 'B'), uint64(len(v))), v...)
		case time.Time:
			b = v.UTC().AppendFormat(append(b, 'T'), "2006-01-02T15:04:05.000000000Z")
		case bool:
			b = append(b, 'b', 0)
			if v {
				b[len(b)-1] = 1
			}
		case float64:
			b = binary.BigEndian.AppendUint64(append(b, 'F'), math.Float64bits(v))
		default:
			panic(fmt.Sprintf("copy: checksum of %T", v)) // readPage normalises every value to the types above
		}
	}
	s.buf = b
	s.h.Write(b) // a hash.Hash's Write never fails
	s.rows++
}

// readPage reads the page after key (nil: the first), each value
// normalised to the Go type of its column's kind (int64, string, []byte,
// time.Time in UTC to the microsecond, bool, float64; nil for NULL),
// whatever type each driver returned.
func readPage(ctx context.Context, tx *gorm.DB, d Dialect, t copyTable, key []any, limit int) ([][]any, error) {
	args := append(append([]any{}, key...), limit)
	rows, err := tx.Statement.ConnPool.QueryContext(ctx, t.selectPage(d, key == nil), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close() //nolint:errcheck // rows.Err below reports what matters
	var page [][]any
	for rows.Next() {
		raw := make([]any, len(t.columns))
		ptrs := make([]any, len(raw))
		for i := range raw {
			ptrs[i] = &raw[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		for i, c := range t.columns {
			v, err := normalise(c.kind, raw[i])
			if err != nil {
				return nil, fmt.Errorf("column %s: %w", c.name, err)
			}
			raw[i] = v
		}
		page = append(page, raw)
	}
	return page, rows.Err()
}

func normalise(k colKind, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch k {
	case kindInt:
		switch v := v.(type) {
		case int64:
			return v, nil
		case int32:
			return int64(v), nil
		case int16:
			return int64(v), nil
		}
	case kindString:
		switch v := v.(type) {
		case string:
			return v, nil
		case []byte:
			return string(v), nil
		}
	case kindBytes:
		switch v := v.(type) {
		case []byte:
			return v, nil
		case string:
			return []byte(v), nil
		}
	case kindTime:
		if v, ok := v.(time.Time); ok {
			// PostgreSQL keeps microseconds and rounds what is finer; the
			// store's clock truncates to them, but times from elsewhere
			// (a webhook attempt's start, the dispatcher's clock) reach
			// SQLite with nanoseconds. Truncated here, before writing and
			// checksumming, a time is written the same to both databases
			// and compares equal after the move.
			return v.UTC().Truncate(time.Microsecond), nil
		}
	case kindBool:
		switch v := v.(type) {
		case bool:
			return v, nil
		case int64:
			return v != 0, nil
		}
	case kindFloat:
		switch v := v.(type) {
		case float64:
			return v, nil
		case float32:
			return float64(v), nil
		}
	}
	return nil, fmt.Errorf("unexpected value of type %T", v)
}

// pageKey is the primary key of a row, to read the next page from.
func (t copyTable) pageKey(row []any) []any {
	key := make([]any, 0, len(t.pk))
	for _, k := range t.pk {
		for i, c := range t.columns {
			if c.name == k.name {
				key = append(key, row[i])
			}
		}
	}
	return key
}

// batchRows is how many rows one statement moves: opts.BatchSize, fewer
// for a wide table so that an insert stays under SQLite's 32,766
// parameters (PostgreSQL allows 65,535).
func (t copyTable) batchRows(size int) int {
	return max(1, min(size, 32000/len(t.columns)))
}

// copyRows copies table t from src to dst in keyset batches and returns
// the checksum of what it read.
func copyRows(ctx context.Context, src, dst *gorm.DB, sd, dd Dialect, t copyTable, opts CopyOptions) (*tableSum, error) {
	start := time.Now()
	var total int64
	if err := src.Raw(`SELECT COUNT(*) FROM ` + quote(t.name)).Scan(&total).Error; err != nil {
		return nil, err
	}
	if t.name == (secret{}).TableName() {
		// The cursor key migrate made in the target gives way to the
		// source's: cursors handed out by the source go on working.
		if _, err := dst.Statement.ConnPool.ExecContext(ctx, `DELETE FROM `+quote(t.name)); err != nil {
			return nil, err
		}
	}
	sum := newTableSum()
	n := t.batchRows(opts.BatchSize)
	var key []any
	for {
		page, err := readPage(ctx, src, sd, t, key, n)
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		if len(page) == 0 {
			break
		}
		if err := insertRows(ctx, dst, dd, t, page); err != nil {
			return nil, fmt.Errorf("write: %w", err)
		}
		for _, row := range page {
			sum.add(row)
		}
		key = t.pageKey(page[len(page)-1])
		if opts.Progress != nil {
			opts.Progress(CopyProgress{Table: t.name, Copied: sum.rows, Rows: total, Elapsed: time.Since(start)})
		}
		if len(page) < n {
			break
		}
	}
	if opts.Progress != nil {
		opts.Progress(CopyProgress{Table: t.name, Copied: sum.rows, Rows: total, Done: true, Elapsed: time.Since(start)})
	}
	return sum, nil
}

// insertRows writes rows into t in one statement.
func insertRows(ctx context.Context, tx *gorm.DB, d Dialect, t copyTable, rows [][]any) error {
	cols := make([]string, len(t.columns))
	for i, c := range t.columns {
		cols[i] = quote(c.name)
	}
	var b strings.Builder
	b.WriteString("INSERT INTO " + quote(t.name) + " (" + strings.Join(cols, ", ") + ") VALUES ")
	args := make([]any, 0, len(rows)*len(cols))
	for i, row := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(" + placeholders(d, len(args), len(row)) + ")")
		args = append(args, row...)
	}
	_, err := tx.Statement.ConnPool.ExecContext(ctx, b.String(), args...)
	return err
}

// checksumTable reads t whole in primary-key order and checksums it.
func checksumTable(ctx context.Context, tx *gorm.DB, d Dialect, t copyTable, batch int) (*tableSum, error) {
	sum := newTableSum()
	n := t.batchRows(batch)
	var key []any
	for {
		page, err := readPage(ctx, tx, d, t, key, n)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", t.name, err)
		}
		for _, row := range page {
			sum.add(row)
		}
		if len(page) < n {
			return sum, nil
		}
		key = t.pageKey(page[len(page)-1])
	}
}

// Checksums reads every table Copy copies and returns its rows and
// checksum (as TableCheck's source side): what a copy of this database
// must reproduce.
func (s *Store) Checksums(ctx context.Context) ([]TableCheck, error) {
	var out []TableCheck
	err := s.readSnapshot(ctx, func(tx *gorm.DB) error {
		for _, t := range copyTables() {
			sum, err := checksumTable(ctx, tx, s.dialect, t, 1000)
			if err != nil {
				return err
			}
			out = append(out, TableCheck{Table: t.name, SourceRows: sum.rows, SourceSum: sum.hex()})
		}
		return nil
	})
	return out, err
}

// fixSequences moves every copied table's id sequence past its largest
// id: the rows came with their ids, and the sequence would otherwise hand
// out 1, 2, … again. An empty table's sequence starts at 1.
func fixSequences(ctx context.Context, tx *gorm.DB) error {
	for _, t := range copyTables() {
		if !t.serial {
			continue
		}
		id := quote(t.pk[0].name)
		// pg_get_serial_sequence also finds an identity column's sequence.
		q := `SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX(` + id + `), 1), MAX(` + id + `) IS NOT NULL) FROM ` + quote(t.name)
		if _, err := tx.Statement.ConnPool.ExecContext(ctx, q, t.name, t.pk[0].name); err != nil {
			return fmt.Errorf("move the sequence of %s past its ids: %w", t.name, err)
		}
	}
	return nil
}
