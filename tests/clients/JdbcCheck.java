// pgJDBC through the dyngate gateway, checked the way a Java application would use it.
//
// Usage: java -cp postgresql.jar JdbcCheck.java GATEWAY_URL DIRECT_URL USER PASSWORD
//
// Both URLs (jdbc:postgresql://host:port/db) name the same database: one through the gateway, one
// straight to PostgreSQL, so results, metadata and errors seen through the gateway can be compared
// with PostgreSQL's own. Covers named server-side prepared statements (prepareThreshold=1),
// batches, DatabaseMetaData, binary transfer, SQLState and server error fields, transactions with
// rollback and savepoints, cursor-based fetching (portal suspension) and Statement.cancel().
// Any failed check throws, which makes the launcher exit non-zero.

import java.lang.reflect.Field;
import java.math.BigDecimal;
import java.sql.*;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.*;

import org.postgresql.PGStatement;
import org.postgresql.util.PSQLException;
import org.postgresql.util.ServerErrorMessage;

public class JdbcCheck {
    static String user, password;

    static void check(boolean ok, Object what) {
        if (!ok) {
            throw new AssertionError(String.valueOf(what));
        }
    }

    static void checkEq(Object got, Object want, String what) {
        if (!Objects.equals(got, want)) {
            throw new AssertionError(what + ": got <" + got + ">, want <" + want + ">");
        }
    }

    static void step(String name) {
        System.out.println("--- " + name);
        System.out.flush();
    }

    static Connection connect(String url, String params) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        return DriverManager.getConnection(url + "?" + params, p);
    }

    /** Every row of a query, each column read with getObject and rendered as a string. */
    static List<List<String>> rows(Connection c, String sql) throws SQLException {
        List<List<String>> out = new ArrayList<>();
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            int n = rs.getMetaData().getColumnCount();
            while (rs.next()) {
                List<String> row = new ArrayList<>();
                for (int i = 1; i <= n; i++) {
                    Object o = rs.getObject(i);
                    row.add(o instanceof byte[] b ? HexFormat.of().formatHex(b) : String.valueOf(o));
                }
                out.add(row);
            }
        }
        return out;
    }

    /** What ResultSetMetaData says about every column. */
    static List<String> describe(ResultSetMetaData md) throws SQLException {
        List<String> out = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            out.add(String.join("|", md.getColumnName(i), md.getColumnLabel(i),
                    String.valueOf(md.getColumnType(i)), md.getColumnTypeName(i),
                    String.valueOf(md.getPrecision(i)), String.valueOf(md.getScale(i)),
                    String.valueOf(md.isNullable(i)), md.getTableName(i), md.getColumnClassName(i)));
        }
        return out;
    }

    /** The wire format (0 text, 1 binary) of each column of a pgJDBC result set. */
    static List<Integer> formats(ResultSet rs) throws Exception {
        Object pgrs = rs.unwrap(Class.forName("org.postgresql.jdbc.PgResultSet"));
        Field f = Class.forName("org.postgresql.jdbc.PgResultSet").getDeclaredField("fields");
        f.setAccessible(true);
        List<Integer> out = new ArrayList<>();
        for (org.postgresql.core.Field fld : (org.postgresql.core.Field[]) f.get(pgrs)) {
            out.add(fld.getFormat());
        }
        return out;
    }

    static PSQLException failure(Connection c, String sql) {
        try (Statement st = c.createStatement()) {
            st.execute(sql);
        } catch (PSQLException e) {
            return e;
        } catch (SQLException e) {
            throw new AssertionError("not a PSQLException: " + e, e);
        }
        throw new AssertionError("no error from " + sql);
    }

    static String fields(PSQLException e) {
        ServerErrorMessage m = e.getServerErrorMessage();
        check(m != null, "no server error message in " + e);
        return String.join("|", e.getSQLState(), m.getSeverity(), m.getMessage(),
                String.valueOf(m.getDetail()), String.valueOf(m.getHint()),
                String.valueOf(m.getPosition()), String.valueOf(m.getSchema()),
                String.valueOf(m.getTable()), String.valueOf(m.getColumn()),
                String.valueOf(m.getConstraint()), String.valueOf(m.getWhere()),
                String.valueOf(m.getRoutine()));
    }

    public static void main(String[] args) throws Exception {
        String gwUrl = args[0], directUrl = args[1];
        user = args[2];
        password = args[3];

        // Named server-side statements from the first execution, binary results where pgJDBC
        // supports them.
        String gwParams = "prepareThreshold=1&binaryTransfer=true";
        try (Connection gw = connect(gwUrl, gwParams);
             Connection direct = connect(directUrl, gwParams);
             Connection directText = connect(directUrl, "prepareThreshold=0&binaryTransfer=false")) {

            step("schema");
            try (Statement st = gw.createStatement()) {
                st.execute("CREATE TABLE jitems (id int PRIMARY KEY, name text NOT NULL, "
                        + "price numeric(10,2), added timestamptz, flag boolean, data bytea, "
                        + "score float8, big bigint)");
                st.execute("COMMENT ON TABLE jitems IS 'jdbc test table'");
            }

            step("prepared statements");
            OffsetDateTime t0 = OffsetDateTime.of(2024, 2, 29, 12, 30, 45, 123456000, ZoneOffset.ofHours(-7));
            try (PreparedStatement ps = gw.prepareStatement(
                    "INSERT INTO jitems (id, name, price, added, flag, data, score, big) "
                            + "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")) {
                for (int i = 1; i <= 10; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "item " + i);
                    ps.setBigDecimal(3, new BigDecimal(i + ".25"));
                    ps.setObject(4, t0.plusDays(i));
                    ps.setBoolean(5, i % 2 == 0);
                    ps.setBytes(6, new byte[] {(byte) i, 0, (byte) 0xff});
                    ps.setDouble(7, i / 3.0);
                    ps.setLong(8, Long.MAX_VALUE - i);
                    checkEq(ps.executeUpdate(), 1, "insert count");
                }
                check(ps.unwrap(PGStatement.class).isUseServerPrepare(), "statement is server-prepared");
            }
            try (PreparedStatement ps = gw.prepareStatement("SELECT name, price, added FROM jitems WHERE id = ?")) {
                for (int round = 0; round < 3; round++) {
                    for (int i = 1; i <= 10; i++) {
                        ps.setInt(1, i);
                        try (ResultSet rs = ps.executeQuery()) {
                            check(rs.next(), "row " + i);
                            checkEq(rs.getString(1), "item " + i, "name");
                            checkEq(rs.getBigDecimal(2), new BigDecimal(i + ".25"), "price");
                            checkEq(rs.getObject(3, OffsetDateTime.class).toInstant(),
                                    t0.plusDays(i).toInstant(), "added");
                            check(!rs.next(), "one row");
                        }
                    }
                }
            }
            // Each statement was parsed once under its own name and reused from then on.
            try (Statement st = gw.createStatement();
                 ResultSet rs = st.executeQuery("SELECT name, statement FROM pg_prepared_statements "
                         + "WHERE statement LIKE 'INSERT INTO jitems %' OR statement LIKE 'SELECT name, price, added %'")) {
                List<String> names = new ArrayList<>();
                while (rs.next()) {
                    names.add(rs.getString(1));
                    check(rs.getString(1).startsWith("S_"), "pgJDBC statement name " + rs.getString(1));
                }
                checkEq(names.size(), 2, "server-side statements " + names);
            }

            step("batches");
            try (PreparedStatement ps = gw.prepareStatement("INSERT INTO jitems (id, name) VALUES (?, ?)")) {
                for (int i = 100; i < 150; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "batch " + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                checkEq(counts.length, 50, "batch length");
                for (int c : counts) {
                    checkEq(c, 1, "batch count");
                }
            }
            try (Statement st = gw.createStatement()) {
                st.addBatch("UPDATE jitems SET score = 0 WHERE id BETWEEN 100 AND 109");
                st.addBatch("DELETE FROM jitems WHERE id BETWEEN 140 AND 149");
                st.addBatch("UPDATE jitems SET score = 1 WHERE id = -1");
                checkEq(Arrays.toString(st.executeBatch()), "[10, 10, 0]", "statement batch counts");
            }
            // A failing batch reports how far it got and the server's SQLSTATE.
            try (PreparedStatement ps = gw.prepareStatement("INSERT INTO jitems (id, name) VALUES (?, ?)")) {
                for (int id : new int[] {200, 201, 1, 202}) {
                    ps.setInt(1, id);
                    ps.setString(2, "b" + id);
                    ps.addBatch();
                }
                try {
                    ps.executeBatch();
                    throw new AssertionError("batch with a duplicate key succeeded");
                } catch (BatchUpdateException e) {
                    checkEq(e.getNextException().getSQLState(), "23505", "batch error SQLState");
                }
            }
            checkEq(rows(direct, "SELECT count(*) FROM jitems WHERE id >= 200").toString(), "[[0]]",
                    "a failed batch in autocommit mode is one transaction");

            step("metadata");
            DatabaseMetaData md = gw.getMetaData();
            checkEq(md.getDatabaseProductVersion(), direct.getMetaData().getDatabaseProductVersion(), "server version");
            try (ResultSet rs = md.getTables(null, "public", "jitems", new String[] {"TABLE"})) {
                check(rs.next(), "getTables finds jitems");
                checkEq(rs.getString("TABLE_NAME"), "jitems", "TABLE_NAME");
                checkEq(rs.getString("TABLE_TYPE"), "TABLE", "TABLE_TYPE");
                checkEq(rs.getString("REMARKS"), "jdbc test table", "REMARKS");
                check(!rs.next(), "one table");
            }
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "jitems", null)) {
                while (rs.next()) {
                    cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
                }
            }
            checkEq(cols.toString(), "[id:int4, name:text, price:numeric, added:timestamptz, flag:bool, "
                    + "data:bytea, score:float8, big:int8]", "getColumns");
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "jitems")) {
                check(rs.next(), "primary key");
                checkEq(rs.getString("COLUMN_NAME"), "id", "primary key column");
            }
            // The catalog queries behind DatabaseMetaData give the same answers directly.
            for (String sql : new String[] {
                    "SELECT oid, typname, typtype FROM pg_type ORDER BY oid LIMIT 200",
                    "SELECT n, md5(n::text), n::numeric / 7 FROM generate_series(1, 1000) n"}) {
                checkEq(rows(gw, sql), rows(direct, sql), sql);
            }

            step("result metadata and binary transfer");
            String q = "SELECT id, name, price, added, flag, data, score, big, NULL::int AS nothing "
                    + "FROM jitems WHERE id <= ? ORDER BY id";
            List<List<String>> viaGw = new ArrayList<>();
            List<String> gwDesc;
            try (PreparedStatement ps = gw.prepareStatement(q)) {
                ps.setInt(1, 10);
                // pgJDBC learns the result types on the first execution and asks for binary
                // results from the second on.
                try (ResultSet rs = ps.executeQuery()) {
                    checkEq(formats(rs).toString(), "[0, 0, 0, 0, 0, 0, 0, 0, 0]", "first execution formats");
                }
                try (ResultSet rs = ps.executeQuery()) {
                    ResultSetMetaData rmd = rs.getMetaData();
                    gwDesc = describe(rmd);
                    checkEq(rmd.getColumnName(1), "id", "column 1");
                    checkEq(rmd.getColumnType(1), Types.INTEGER, "id type");
                    checkEq(rmd.getColumnTypeName(3), "numeric", "price type");
                    checkEq(rmd.getPrecision(3), 10, "price precision");
                    checkEq(rmd.getScale(3), 2, "price scale");
                    checkEq(rmd.getColumnType(4), Types.TIMESTAMP, "added type");
                    checkEq(rmd.getColumnTypeName(4), "timestamptz", "added type name");
                    checkEq(rmd.getColumnType(6), Types.BINARY, "data type");
                    checkEq(rmd.isNullable(2), ResultSetMetaData.columnNoNulls, "name not null");
                    // pgJDBC asks for binary for the types it decodes in binary (int4, numeric,
                    // timestamptz, bytea, float8, int8), text for the rest (text, bool).
                    checkEq(formats(rs).toString(), "[1, 0, 1, 1, 0, 1, 1, 1, 1]", "wire formats");
                    while (rs.next()) {
                        viaGw.add(List.of(String.valueOf(rs.getInt(1)), rs.getString(2),
                                String.valueOf(rs.getBigDecimal(3)),
                                String.valueOf(rs.getObject(4, OffsetDateTime.class).toInstant()),
                                String.valueOf(rs.getBoolean(5)), HexFormat.of().formatHex(rs.getBytes(6)),
                                String.valueOf(rs.getDouble(7)), String.valueOf(rs.getLong(8)),
                                String.valueOf(rs.getObject(9))));
                    }
                }
            }
            checkEq(viaGw.size(), 10, "rows");
            checkEq(viaGw.get(2), List.of("3", "item 3", "3.25", "2024-03-03T19:30:45.123456Z", "false",
                    "0300ff", String.valueOf(1.0), String.valueOf(Long.MAX_VALUE - 3), "null"), "row 3");
            // The same query straight to PostgreSQL in text format must read the same.
            List<List<String>> viaText = new ArrayList<>();
            try (PreparedStatement ps = directText.prepareStatement(q)) {
                ps.setInt(1, 10);
                try (ResultSet rs = ps.executeQuery()) {
                    checkEq(describe(rs.getMetaData()), gwDesc, "metadata direct vs gateway");
                    checkEq(formats(rs).toString(), "[0, 0, 0, 0, 0, 0, 0, 0, 0]", "text formats");
                    while (rs.next()) {
                        viaText.add(List.of(String.valueOf(rs.getInt(1)), rs.getString(2),
                                String.valueOf(rs.getBigDecimal(3)),
                                String.valueOf(rs.getObject(4, OffsetDateTime.class).toInstant()),
                                String.valueOf(rs.getBoolean(5)), HexFormat.of().formatHex(rs.getBytes(6)),
                                String.valueOf(rs.getDouble(7)), String.valueOf(rs.getLong(8)),
                                String.valueOf(rs.getObject(9))));
                    }
                }
            }
            checkEq(viaGw, viaText, "binary via gateway vs text direct");

            step("errors");
            String[] failing = {
                "INSERT INTO jitems (id, name) VALUES (1, 'dup')",
                "INSERT INTO jitems (id) VALUES (999)",
                "SELECT nme FROM jitems",
                "SELEC 1",
                "DO $$ BEGIN RAISE EXCEPTION 'custom' USING ERRCODE = 'P0042', DETAIL = 'det', HINT = 'hnt'; END $$",
            };
            for (String sql : failing) {
                checkEq(fields(failure(gw, sql)), fields(failure(direct, sql)), "error fields of " + sql);
            }
            PSQLException dup = failure(gw, failing[0]);
            checkEq(dup.getSQLState(), "23505", "duplicate SQLState");
            checkEq(dup.getServerErrorMessage().getConstraint(), "jitems_pkey", "constraint");
            checkEq(dup.getServerErrorMessage().getDetail(), "Key (id)=(1) already exists.", "detail");
            PSQLException missing = failure(gw, failing[2]);
            checkEq(missing.getSQLState(), "42703", "undefined column");
            checkEq(missing.getServerErrorMessage().getPosition(), 8, "error position");
            PSQLException custom = failure(gw, failing[4]);
            checkEq(custom.getSQLState(), "P0042", "custom SQLState");
            checkEq(custom.getServerErrorMessage().getHint(), "hnt", "hint");
            // Errors from a server-prepared statement's execution, too.
            try (PreparedStatement ps = gw.prepareStatement("SELECT 10 / ?")) {
                ps.setInt(1, 5);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next() && rs.getInt(1) == 2, "10 / 5");
                }
                ps.setInt(1, 0);
                try {
                    ps.executeQuery();
                    throw new AssertionError("division by zero succeeded");
                } catch (SQLException e) {
                    checkEq(e.getSQLState(), "22012", "division by zero");
                }
            }
            SQLWarning w;
            try (Statement st = gw.createStatement()) {
                st.execute("DO $$ BEGIN RAISE NOTICE 'note %', 7; END $$");
                w = st.getWarnings();
            }
            check(w != null, "notice as SQLWarning");
            checkEq(w.getMessage(), "note 7", "notice text");
            checkEq(w.getSQLState(), "00000", "notice SQLState");

            step("transactions");
            gw.setAutoCommit(false);
            try (Statement st = gw.createStatement()) {
                st.executeUpdate("INSERT INTO jitems (id, name) VALUES (300, 'rolled back')");
                checkEq(rows(direct, "SELECT count(*) FROM jitems WHERE id = 300").toString(), "[[0]]",
                        "uncommitted row invisible to others");
                gw.rollback();
                checkEq(rows(gw, "SELECT count(*) FROM jitems WHERE id = 300").toString(), "[[0]]", "rolled back");

                st.executeUpdate("INSERT INTO jitems (id, name) VALUES (301, 'committed')");
                Savepoint sp = gw.setSavepoint();
                st.executeUpdate("INSERT INTO jitems (id, name) VALUES (302, 'to savepoint')");
                gw.rollback(sp);
                gw.commit();
                checkEq(rows(direct, "SELECT id FROM jitems WHERE id >= 300 ORDER BY id").toString(), "[[301]]",
                        "commit after rollback to savepoint");

                // An error aborts the transaction until rollback.
                st.executeUpdate("INSERT INTO jitems (id, name) VALUES (303, 'lost')");
                try {
                    st.executeUpdate("INSERT INTO jitems (id, name) VALUES (1, 'dup')");
                    throw new AssertionError("duplicate accepted");
                } catch (SQLException e) {
                    checkEq(e.getSQLState(), "23505", "duplicate in transaction");
                }
                try {
                    st.executeQuery("SELECT 1");
                    throw new AssertionError("statement ran in an aborted transaction");
                } catch (SQLException e) {
                    checkEq(e.getSQLState(), "25P02", "aborted transaction");
                    check(e.getMessage().contains("current transaction is aborted"), e.getMessage());
                }
                gw.rollback();
                checkEq(rows(gw, "SELECT count(*) FROM jitems WHERE id = 303").toString(), "[[0]]", "lost row");
                gw.commit();
            }

            step("cursor fetch");
            // With autocommit off and a fetch size, pgJDBC reads through a portal in chunks
            // (Execute with a row limit, PortalSuspended).
            try (Statement st = gw.createStatement()) {
                st.setFetchSize(7);
                try (ResultSet rs = st.executeQuery("SELECT g FROM generate_series(1, 1000) g")) {
                    long sum = 0, n = 0;
                    while (rs.next()) {
                        sum += rs.getInt(1);
                        n++;
                    }
                    checkEq(n, 1000L, "rows fetched");
                    checkEq(sum, 500500L, "sum");
                }
            }
            gw.commit();
            gw.setAutoCommit(true);

            step("cancel");
            try (Statement st = gw.createStatement()) {
                Thread t = new Thread(() -> {
                    try {
                        Thread.sleep(500);
                        st.cancel();
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                long start = System.nanoTime();
                t.start();
                try {
                    st.execute("SELECT pg_sleep(30)");
                    throw new AssertionError("pg_sleep was not cancelled");
                } catch (SQLException e) {
                    checkEq(e.getSQLState(), "57014", "cancelled");
                }
                t.join();
                long ms = (System.nanoTime() - start) / 1_000_000;
                check(ms < 10_000, "cancel took " + ms + " ms");
            }
            checkEq(rows(gw, "SELECT 'still usable'").toString(), "[[still usable]]", "after cancel");
        }
        System.out.println("jdbc: all checks passed");
    }
}
