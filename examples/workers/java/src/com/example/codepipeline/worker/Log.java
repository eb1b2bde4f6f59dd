package com.example.codepipeline.worker;

import java.time.Instant;

/** One line per message on standard output: `<time> <worker name>: <message>`. */
record Log(String name) {
  void info(String format, Object... args) {
    System.out.println(Instant.now() + " " + name + ": " + String.format(format, args));
  }
}
