/*
 * Reads topics from their beginning with Apache Kafka's own Java client
 * (kafka-clients), not librdkafka, and prints every record as one JSON
 * line: topic, partition, offset, and the key, value and headers as
 * base64 (null stays null).  It shows that a consumer that is not
 * librdkafka reads what the worker writes, codec included.
 *
 *   java -cp 'target/lib/*' EventReader.java BOOTSTRAP SECONDS TOPIC=COUNT...
 *
 * Stops once each TOPIC has given COUNT records (exit 0) or after
 * SECONDS (exit 1, having printed what it read).  No consumer group: the
 * partitions are assigned, so nothing is committed anywhere.
 */

import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class EventReader {
    private static String bytes(byte[] b) {
        return b == null ? "null"
                         : "\"" + Base64.getEncoder().encodeToString(b) + "\"";
    }

    private static String text(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public static void main(String[] args) {
        if (args.length < 3) {
            System.err.println("usage: EventReader BOOTSTRAP SECONDS "
                               + "TOPIC=COUNT...");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("enable.auto.commit", "false");
        props.put("auto.offset.reset", "earliest");
        props.put("key.deserializer", ByteArrayDeserializer.class.getName());
        props.put("value.deserializer",
                  ByteArrayDeserializer.class.getName());
        long deadline = System.currentTimeMillis()
                        + Long.parseLong(args[1]) * 1000;
        Map<String, Integer> wanted = new HashMap<>();
        Map<String, Integer> seen = new HashMap<>();
        for (int i = 2; i < args.length; i++) {
            String[] pair = args[i].split("=", 2);
            wanted.put(pair[0], Integer.parseInt(pair[1]));
            seen.put(pair[0], 0);
        }
        try (KafkaConsumer<byte[], byte[]> consumer =
                 new KafkaConsumer<>(props)) {
            List<TopicPartition> parts = new ArrayList<>();
            for (String topic : wanted.keySet()) {
                for (PartitionInfo p :
                     consumer.partitionsFor(topic, Duration.ofSeconds(30)))
                    parts.add(new TopicPartition(topic, p.partition()));
            }
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r :
                     consumer.poll(Duration.ofMillis(500))) {
                    StringBuilder line = new StringBuilder();
                    line.append("{\"topic\":").append(text(r.topic()))
                        .append(",\"partition\":").append(r.partition())
                        .append(",\"offset\":").append(r.offset())
                        .append(",\"key\":").append(bytes(r.key()))
                        .append(",\"value\":").append(bytes(r.value()))
                        .append(",\"headers\":[");
                    String comma = "";
                    for (Header h : r.headers()) {
                        line.append(comma).append("[").append(text(h.key()))
                            .append(",").append(bytes(h.value())).append("]");
                        comma = ",";
                    }
                    System.out.println(line.append("]}"));
                    seen.merge(r.topic(), 1, Integer::sum);
                }
                boolean done = true;
                for (String topic : wanted.keySet())
                    done &= seen.get(topic) >= wanted.get(topic);
                if (done) {
                    System.out.flush();
                    return;
                }
            }
        }
        System.err.println("timed out: read " + seen + " of " + wanted);
        System.exit(1);
    }
}
