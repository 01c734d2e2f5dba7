# Flink 2.3 with the pieces scripts/flink-dist adds to the PyPI distribution for the tests: the SQL
# Gateway is part of the official image; the JDBC connector (core + PostgreSQL dialect, the only
# line built for Flink 2.x) and the PostgreSQL driver go on the classpath (lib/), fetched by Maven
# with the same coordinates as scripts/flink-dist.
FROM maven:3.9-eclipse-temurin-17 AS jars
RUN for a in org.apache.flink:flink-connector-jdbc-core:4.0.0-2.0 \
             org.apache.flink:flink-connector-jdbc-postgres:4.0.0-2.0 \
             org.postgresql:postgresql:42.7.4; do \
      mvn -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy -Dartifact="$a" -DoutputDirectory=/jars || exit 1; \
    done

FROM flink:2.3.0-java17
COPY --from=jars /jars/*.jar /opt/flink/lib/
