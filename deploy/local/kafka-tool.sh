#!/usr/bin/env bash
# Run an Apache Kafka command-line tool from the cached Kafka jars (see stack.sh fetch).
#
#   deploy/local/kafka-tool.sh <alias-or-MainClass> [args...]
#
# e.g. deploy/local/kafka-tool.sh topics --bootstrap-server 127.0.0.1:9092 --list
#      deploy/local/kafka-tool.sh consumer-groups --bootstrap-server 127.0.0.1:9092 --describe --group g
#      deploy/local/kafka-tool.sh org.apache.kafka.tools.GetOffsetShell --bootstrap-server 127.0.0.1:9092
# Tool logging goes to stderr at WARN; KAFKA_TOOL_HEAP_OPTS overrides the heap (default -Xmx512m).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${STREAMSCORE_CACHE:-${HOME:-/root}/.cache/streamscore}"
KAFKA_VERSION=4.4.0
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"

aliases() {
  cat <<'T'
topics             org.apache.kafka.tools.TopicCommand
consumer-groups    org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
share-groups       org.apache.kafka.tools.consumer.group.ShareGroupCommand
groups             org.apache.kafka.tools.GroupsCommand
configs            org.apache.kafka.tools.ConfigCommand
console-producer   org.apache.kafka.tools.ConsoleProducer
console-consumer   org.apache.kafka.tools.consumer.ConsoleConsumer
get-offsets        org.apache.kafka.tools.GetOffsetShell
delete-records     org.apache.kafka.tools.DeleteRecordsCommand
metadata-quorum    org.apache.kafka.tools.MetadataQuorumCommand
transactions       org.apache.kafka.tools.TransactionsCommand
features           org.apache.kafka.tools.FeatureCommand
log-dirs           org.apache.kafka.tools.LogDirsCommand
broker-api-versions org.apache.kafka.tools.BrokerApiVersionsCommand
leader-election    org.apache.kafka.tools.LeaderElectionCommand
acls               org.apache.kafka.tools.AclCommand
cluster            org.apache.kafka.tools.ClusterTool
storage            kafka.tools.StorageTool
T
}

if [ "$#" = 0 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  echo "usage: $0 <alias-or-MainClass> [args...]" >&2
  echo "aliases:" >&2
  aliases | sed 's/^/  /' >&2
  exit 2
fi

tool="$1"; shift
class="$(aliases | awk -v a="$tool" '$1 == a { print $2 }')"
[ -n "$class" ] || class="$tool"

if [ ! -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  "$HERE/stack.sh" fetch kafka >&2
fi

# shellcheck disable=SC2086
exec "${JAVA_HOME:+$JAVA_HOME/bin/}java" ${KAFKA_TOOL_HEAP_OPTS:--Xmx512m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$HERE/kafka/tools-log4j2.yaml" \
  -cp "$LIBS/*" "$class" "$@"
