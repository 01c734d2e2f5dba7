// Dynamic tables end to end through pgJDBC, as a Java application would use them.
//
// Usage: java -cp postgresql.jar DynamicTablesJdbc.java GATEWAY_URL USER PASSWORD
//
// GATEWAY_URL (jdbc:postgresql://host:port/db) names the gateway's catalog database. The
// statements go through Statement and PreparedStatement, with server-side prepared statements
// from the first use (prepareThreshold=1) and without (prepareThreshold=0): CREATE fills the
// table, REFRESH answers a result set with typed columns, SHOW / DESCRIBE are queries, errors
// carry their SQLSTATE and leave the connection usable, a transaction block refuses the
// statements that change things, and DatabaseMetaData sees the dynamic table as a table.
// Any failed check throws, which makes the launcher exit non-zero.

import java.sql.*;
import java.util.*;

public class DynamicTablesJdbc {
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

    static String sqlState(Statement st, String sql) {
        try {
            st.execute(sql);
        } catch (SQLException e) {
            return e.getSQLState();
        }
        throw new AssertionError("no error from: " + sql);
    }

    static long total(Connection c) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT coalesce(sum(total), 0) FROM daily")) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static void run(String url, String user, String password, int prepareThreshold) throws Exception {
        System.out.println("--- prepareThreshold=" + prepareThreshold);
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        p.setProperty("prepareThreshold", String.valueOf(prepareThreshold));
        try (Connection c = DriverManager.getConnection(url, p); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS orders");
            st.execute("CREATE TABLE orders (id int PRIMARY KEY, day date NOT NULL, amount bigint NOT NULL)");
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO orders VALUES (?, date '2024-01-01' + ?, ?)")) {
                for (int i = 1; i <= 100; i++) {
                    ins.setInt(1, i);
                    ins.setInt(2, i % 4);
                    ins.setLong(3, i);
                    ins.addBatch();
                }
                ins.executeBatch();
            }

            st.execute("CREATE DYNAMIC TABLE daily FRESHNESS = INTERVAL '1' HOUR AS SELECT day, sum(amount) AS total FROM orders GROUP BY day");
            checkEq(total(c), 5050L, "filled at creation");
            checkEq(sqlState(st, "CREATE DYNAMIC TABLE daily AS SELECT 1 AS one"), "42P07", "exists");
            checkEq(total(c), 5050L, "the connection goes on after an error");

            st.execute("INSERT INTO orders VALUES (101, '2024-01-01', 1000)");
            try (PreparedStatement refresh = c.prepareStatement("REFRESH DYNAMIC TABLE daily")) {
                for (int round = 0; round < 3; round++) {
                    try (ResultSet rs = refresh.executeQuery()) {
                        ResultSetMetaData md = rs.getMetaData();
                        checkEq(md.getColumnCount(), 3, "refresh columns");
                        checkEq(md.getColumnName(1), "job_id", "column 1");
                        checkEq(md.getColumnName(2), "state", "column 2");
                        checkEq(md.getColumnName(3), "rows_written", "column 3");
                        checkEq(md.getColumnType(3), Types.BIGINT, "rows_written is bigint");
                        check(rs.next(), "one row");
                        check(rs.getString(1).startsWith("dyngate-"), rs.getString(1));
                        checkEq(rs.getString(2), "SUCCEEDED", "state");
                        // Refreshed incrementally: the changed group's row, then nothing.
                        checkEq(rs.getLong(3), round == 0 ? 1L : 0L, "rows written");
                        check(!rs.next(), "only one row");
                    }
                }
            }
            checkEq(total(c), 6050L, "refreshed");

            try (ResultSet rs = st.executeQuery("SHOW DYNAMIC TABLES")) {
                ResultSetMetaData md = rs.getMetaData();
                List<String> cols = new ArrayList<>();
                for (int i = 1; i <= md.getColumnCount(); i++) {
                    cols.add(md.getColumnName(i));
                }
                check(cols.contains("table_name") && cols.contains("refresh_mode"), cols);
                check(rs.next(), "one table");
                checkEq(rs.getString("table_name"), "daily", "name");
                checkEq(rs.getString("refresh_mode"), "FULL", "mode");
                check(!rs.next(), "only one table");
            }
            Map<String, String> props = new HashMap<>();
            try (PreparedStatement d = c.prepareStatement("DESCRIBE DYNAMIC TABLE daily"); ResultSet rs = d.executeQuery()) {
                while (rs.next()) {
                    props.put(rs.getString(1), rs.getString(2));
                }
            }
            checkEq(props.get("status"), "ACTIVATED", "describe status");
            checkEq(props.get("freshness"), "1 HOUR", "describe freshness");

            st.execute("ALTER DYNAMIC TABLE daily SUSPEND");
            checkEq(sqlState(st, "ALTER DYNAMIC TABLE daily SUSPEND"), "55000", "suspended twice");
            st.execute("ALTER DYNAMIC TABLE daily RESUME");
            st.execute("ALTER DYNAMIC TABLE daily SET FRESHNESS = INTERVAL '1' MINUTE");
            try (ResultSet rs = st.executeQuery("SELECT refresh_mode FROM dyngate.dynamic_tables WHERE table_name = 'daily'")) {
                rs.next();
                checkEq(rs.getString(1), "CONTINUOUS", "mode after SET FRESHNESS");
            }

            // A transaction block refuses what changes things; reading goes on; rollback works.
            c.setAutoCommit(false);
            st.execute("INSERT INTO orders VALUES (102, '2024-01-02', 1)");
            checkEq(sqlState(st, "DROP DYNAMIC TABLE daily"), "25001", "drop in a transaction");
            try (ResultSet rs = st.executeQuery("SHOW DYNAMIC TABLES")) {
                check(rs.next(), "show in a transaction");
            }
            c.rollback();
            c.setAutoCommit(true);
            try (ResultSet rs = st.executeQuery("SELECT count(*) FROM orders WHERE id = 102")) {
                rs.next();
                checkEq(rs.getLong(1), 0L, "rolled back");
            }

            try (ResultSet rs = c.getMetaData().getTables(null, "public", "daily", new String[] {"TABLE"})) {
                check(rs.next(), "DatabaseMetaData sees the dynamic table");
            }
            checkEq(sqlState(st, "DROP TABLE daily"), "42809", "plain DROP TABLE");
            checkEq(sqlState(st, "DROP TABLE orders"), "2BP01", "dropping a source");
            st.execute("DROP DYNAMIC TABLE daily");
            checkEq(sqlState(st, "SELECT * FROM daily"), "42P01", "gone");
        }
    }

    public static void main(String[] args) throws Exception {
        for (int threshold : new int[] {1, 0}) {
            run(args[0], args[1], args[2], threshold);
        }
        System.out.println("jdbc dynamic tables: all checks passed");
    }
}
