// pgjdbc (the driver inside Metabase, DBeaver and Tableau) against txpipe's
// Postgres endpoint. Run as a single-file program:
//   java -cp /usr/share/java/postgresql.jar PgJdbcCheck.java JDBC_URL
// Prints one "key=value" line per check; exits non-zero on the first failure.
import java.math.BigDecimal;
import java.sql.*;
import java.util.*;

public class PgJdbcCheck {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("FAILED: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        if (args.length > 2) {
            props.setProperty("user", args[1]);
            props.setProperty("password", args[2]);
        }
        try (Connection c = DriverManager.getConnection(args[0], props)) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product=" + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion());

            // What Metabase's sync does first: schemas, then tables, then columns.
            List<String> schemas = new ArrayList<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) schemas.add(rs.getString("TABLE_SCHEM"));
            }
            System.out.println("schemas=" + schemas);
            check(schemas.contains("public"), "getSchemas lists public");

            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            Collections.sort(tables);
            System.out.println("tables=" + tables);
            for (String t : new String[] {"fact_transaction", "dim_customer", "dim_merchant", "daily_sales_summary"}) {
                check(tables.contains(t), "getTables lists " + t);
            }

            Map<String, String> columns = new TreeMap<>();
            try (ResultSet rs = md.getColumns(null, "public", "fact_transaction", "%")) {
                while (rs.next()) columns.put(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"));
            }
            System.out.println("columns=" + columns);
            check("numeric".equals(columns.get("amount_usd")), "amount_usd is numeric: " + columns.get("amount_usd"));
            check("timestamptz".equals(columns.get("transaction_ts")), "transaction_ts is timestamptz: " + columns.get("transaction_ts"));
            check("_text".equals(columns.get("fraud_reasons")), "fraud_reasons is text[]: " + columns.get("fraud_reasons"));
            check("bool".equals(columns.get("is_fraud")), "is_fraud is bool: " + columns.get("is_fraud"));

            try (ResultSet rs = md.getPrimaryKeys(null, "public", "fact_transaction")) {
                int n = 0;
                while (rs.next()) n++;
                System.out.println("primary_keys=" + n);
            }

            // Metabase asks these on connect.
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SHOW TRANSACTION ISOLATION LEVEL")) {
                check(rs.next(), "SHOW TRANSACTION ISOLATION LEVEL answers");
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT current_database(), current_schema()")) {
                check(rs.next(), "current_database answers");
                System.out.println("current_database=" + rs.getString(1) + " current_schema=" + rs.getString(2));
            }

            // A prepared statement with a parameter, run more times than
            // pgjdbc's prepareThreshold (5) so the server-side path is used.
            String customer;
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT customer_id FROM fact_transaction ORDER BY transaction_id LIMIT 1")) {
                check(rs.next(), "one customer");
                customer = rs.getString(1);
            }
            String sql = "SELECT transaction_id, amount_usd, transaction_ts, fraud_reasons, is_fraud "
                + "FROM fact_transaction WHERE customer_id = ? ORDER BY transaction_ts DESC, transaction_id LIMIT 100";
            int rows = 0;
            BigDecimal total = BigDecimal.ZERO;
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                for (int round = 0; round < 7; round++) {
                    ps.setString(1, customer);
                    rows = 0;
                    total = BigDecimal.ZERO;
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            rows++;
                            BigDecimal amount = rs.getBigDecimal("amount_usd");
                            check(amount.scale() == 2, "amount_usd keeps scale 2: " + amount);
                            total = total.add(amount);
                            Timestamp ts = rs.getTimestamp("transaction_ts");
                            check(ts != null, "timestamptz reads");
                            Array reasons = rs.getArray("fraud_reasons");
                            if (reasons != null) {
                                String[] r = (String[]) reasons.getArray();
                                check(r != null, "text[] reads");
                            }
                            rs.getBoolean("is_fraud");
                        }
                    }
                }
            }
            check(rows > 0, "the prepared statement returns the customer's rows");
            System.out.println("customer=" + customer + " rows=" + rows + " total=" + total.toPlainString());

            // The same rows in the point-lookup shape the endpoint answers
            // from its customer index (pgjdbc binds and reads binary after
            // the threshold): the same count and total.
            String lookup = "SELECT transaction_id, amount_usd, transaction_ts, fraud_reasons, is_fraud "
                + "FROM fact_transaction WHERE customer_id = ? ORDER BY transaction_ts DESC LIMIT 100";
            try (PreparedStatement ps = c.prepareStatement(lookup)) {
                for (int round = 0; round < 7; round++) {
                    ps.setString(1, customer);
                    int n = 0;
                    BigDecimal sum = BigDecimal.ZERO;
                    Timestamp previous = null;
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            n++;
                            sum = sum.add(rs.getBigDecimal("amount_usd"));
                            Timestamp ts = rs.getTimestamp("transaction_ts");
                            check(previous == null || !ts.after(previous), "lookup rows newest first");
                            previous = ts;
                            Array reasons = rs.getArray("fraud_reasons");
                            if (reasons != null) {
                                check(((String[]) reasons.getArray()) != null, "text[] reads");
                            }
                        }
                    }
                    check(n == rows, "round " + round + ": lookup rows " + n + " vs " + rows);
                    check(sum.compareTo(total) == 0, "round " + round + ": lookup total " + sum + " vs " + total);
                }
            }

            // A mart, as a Metabase question would read it.
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT sum(txn_count) FROM daily_sales_summary")) {
                check(rs.next(), "daily_sales_summary answers");
                System.out.println("daily_sales_summary_count=" + rs.getLong(1));
            }

            // Read-only: the driver sees SQLSTATE 25006.
            try (Statement s = c.createStatement()) {
                s.executeUpdate("DELETE FROM fact_transaction");
                check(false, "DELETE must be refused");
            } catch (SQLException e) {
                System.out.println("delete_sqlstate=" + e.getSQLState());
                check("25006".equals(e.getSQLState()), "DELETE refused with 25006, got " + e.getSQLState());
            }
        }
        System.out.println("ok");
    }
}
